"""Inputs as users hold them (issue 23): tables of image paths or URLs, and zip archives,
featurized into the same rows a folder of the same images gives."""

from __future__ import annotations

import csv
import hashlib
import io
import struct
import threading
import time
import zipfile
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable, write_deltalake
from mlflow import MlflowClient
from PIL import Image

from imgfeat import dataset
from imgfeat.config import FeaturizeConfig, LabelsConfig, SourceConfig, load_config
from imgfeat.decode import decode_image
from imgfeat.delta import read_table
from imgfeat.errors import InputError
from imgfeat.featurizers import load_featurizer, resolve_featurizer
from imgfeat.runs import featurize_run

FEATURIZER = "grayscale16"  # tiny and exact: the rows' numbers are checked against a direct forward pass


def _featurize(spark, input_: Path | str, table: Path, *sets: str):
    cfg = load_config(
        FeaturizeConfig,
        overrides=["tracking.enabled=false", f"featurizer.name={FEATURIZER}", *sets],
        input=str(input_),
        table=str(table),
    )
    return featurize_run(cfg, spark)


def _rows(table: Path) -> dict[str, dict]:
    rows = DeltaTable(str(table)).to_pyarrow_table().to_pylist()
    by_path = {r["path"]: r for r in rows}
    assert len(by_path) == len(rows), "a path has two rows"
    return by_path


def _reference(data: bytes) -> np.ndarray:
    spec = resolve_featurizer(FEATURIZER)
    model = load_featurizer(spec)
    return model.embed(model.prepare(decode_image(data, draft_size=spec.resize_size).image)[None])[0]


def _assert_embeds(row: dict, data: bytes) -> None:
    assert row["status"] == "ok", row
    np.testing.assert_allclose(np.asarray(row["embedding"], np.float32), _reference(data), atol=1e-5, rtol=0)


def test_csv_of_relative_paths_and_parquet_table(spark, inputs, tmp_path):
    names = sorted(p.name for p in inputs.iterdir())
    with open(inputs / "records.csv", "w", newline="") as f:  # beside the images, naming them relatively
        writer = csv.writer(f)
        writer.writerow(["front", "back", "label"])
        for i, name in enumerate(names):  # every image in front; back repeats some, and is sometimes empty
            writer.writerow([name if i % 2 else f"./{name}", names[0] if i % 3 else "", f"kind{i % 2}"])
    table = tmp_path / "emb"

    first = _featurize(spark, inputs / "records.csv", table, "image_columns=[front,back]")
    rows = _rows(table)
    assert first.listed == len(names) and first.counts == {"ok": len(names)} and first.input_kind == "csv"
    assert sorted(rows) == [f"file:{inputs / n}" for n in names]  # the keys a folder listing gives
    for name in names:
        _assert_embeds(rows[f"file:{inputs / name}"], (inputs / name).read_bytes())

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracked = ("image_columns=[front,back]", "tracking.enabled=true", f"tracking.uri={store}")
    again = _featurize(spark, inputs / "records.csv", table, *tracked)
    folder = _featurize(spark, inputs, table)  # the same images as a folder: the same keys, nothing new
    assert (again.featurized, again.committed, folder.featurized, folder.committed) == (0, False, 0, False)
    # The run names its input table and the hash of its bytes as an MLflow dataset (lineage).
    digest = hashlib.sha256((inputs / "records.csv").read_bytes()).hexdigest()[:16]
    logged = MlflowClient(store).get_run(again.run_id).inputs.dataset_inputs
    contexts = [{t.key: t.value for t in d.tags}.get("mlflow.data.context") for d in logged]
    found = [(d.dataset.name, d.dataset.digest, c) for d, c in zip(logged, contexts, strict=True)]
    assert ("records.csv", digest, "source") in found

    # Labels from the input table itself (item 4): the same resolution, so every image joins its row.
    frame = read_table(spark, str(table))
    labels = LabelsConfig(source=str(inputs / "records.csv"), path_column="front", label="label")
    labeled = {r["path"]: r["label"] for r in dataset.with_labels(spark, frame, labels).collect()}
    assert labeled == {f"file:{inputs / n}": f"kind{i % 2}" for i, n in enumerate(names)}

    # A Parquet table elsewhere with absolute paths: known images are skipped, a missing one is a row.
    (tmp_path / "tables").mkdir()
    missing = inputs / "gone.jpg"
    pd.DataFrame({"path": [str(inputs / names[0]), str(missing), None]}).to_parquet(tmp_path / "tables" / "t.parquet")
    parquet = _featurize(spark, tmp_path / "tables" / "t.parquet", table)
    assert (parquet.listed, parquet.counts) == (2, {"read_error": 1})
    assert "No such file" in _rows(table)[f"file:{missing}"]["error"]

    # A Delta table of listings naming the images by absolute path: known, so nothing new.
    write_deltalake(str(tmp_path / "listings"), pd.DataFrame({"image_url": [str(inputs / n) for n in names]}))
    listings = _featurize(spark, tmp_path / "listings", table, "image_columns=[image_url]")
    assert (listings.input_kind, listings.input_version, listings.listed, listings.featurized) == ("delta", "0", len(names), 0)


class _Photos(SimpleHTTPRequestHandler):
    """Serves a folder; `/hang.jpg` answers nothing for 5 s (past the test's timeout)."""

    def do_HEAD(self) -> None:
        if not self._hangs():
            super().do_HEAD()

    def do_GET(self) -> None:
        if not self._hangs():
            super().do_GET()

    def _hangs(self) -> bool:
        if self.path.startswith("/hang"):
            time.sleep(5)
            return True
        return False

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def served(inputs: Path) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Photos, directory=str(inputs)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_csv_of_loopback_urls_with_a_404_and_a_hang(spark, inputs, served, tmp_path):
    names = ["chelsea.jpg", "coffee.jpg", "chelsea.png"]
    urls = [f"{served}/{n}" for n in names] + [f"{served}/missing.jpg", f"{served}/hang.jpg"]
    pd.DataFrame({"image_url": urls + urls[:1]}).to_csv(tmp_path / "urls.csv", index=False)  # one URL twice
    table = tmp_path / "emb"
    sets = ("image_columns=[image_url]", "read.timeout_s=1", "read.retries=1")

    first = _featurize(spark, tmp_path / "urls.csv", table, *sets)
    rows = _rows(table)
    assert first.listed == 5 and first.counts == {"ok": 3, "read_error": 2}
    for name, url in zip(names, urls, strict=False):
        _assert_embeds(rows[url], (inputs / name).read_bytes())
        assert rows[url]["length"] == (inputs / name).stat().st_size and rows[url]["modification_time"] is not None
    assert "FileNotFoundError" in rows[f"{served}/missing.jpg"]["error"]
    assert "Timeout" in rows[f"{served}/hang.jpg"]["error"]

    again = _featurize(spark, tmp_path / "urls.csv", table, *sets)  # only the failed reads are tried again
    assert again.counts == {"read_error": 2} and len(_rows(table)) == 5
    assert all(_rows(table)[u]["run_id"] == rows[u]["run_id"] for u in urls[:3])


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, (2026, 1, 2, 3, 4, 6)), data, zipfile.ZIP_DEFLATED)
    return path


def _declare_size(path: Path, member: str, size: int) -> None:
    """Make the central directory lie about a member's inflated size (a bomb's trick)."""
    data = bytearray(path.read_bytes())
    at = data.index(b"PK\x01\x02")  # the first central directory entry
    while data[at + 46 : at + 46 + len(member)] != member.encode():
        at = data.index(b"PK\x01\x02", at + 4)
    struct.pack_into("<I", data, at + 24, size)
    path.write_bytes(bytes(data))


def _jpeg(inputs: Path, name: str, flip: bool = False) -> bytes:
    with Image.open(inputs / name) as im:
        out = io.BytesIO()
        (im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else im).save(out, "JPEG", quality=90)
        return out.getvalue()


def test_zip_archives_class_folders_csv_inside_and_bombs(spark, inputs, tmp_path):
    photos = {f"cats/{n}": _jpeg(inputs, n) for n in ("chelsea.jpg", "coffee.jpg")}
    photos |= {f"others/{n}": _jpeg(inputs, n) for n in ("rocket.jpg", "astronaut.jpg")}
    hostile = {
        "bomb.png": b"\0" * 3_000_000,  # declares 3 MB, past the cap: never inflated
        "liar.png": b"\0" * 3_000_000,  # declares 100 bytes, inflates to 3 MB
        "../evil.jpg": photos["cats/chelsea.jpg"],
        "/etc/abs.jpg": photos["cats/chelsea.jpg"],
    }
    fork = {"__MACOSX/cats/._chelsea.jpg": b"\0\5\x16\7 AppleDouble"}  # macOS metadata, not an image
    archive = _zip(tmp_path / "photos.zip", photos | hostile | fork)
    _declare_size(archive, "liar.png", 100)
    table = tmp_path / "emb"
    cap = "read.max_image_bytes=1000000"

    first = _featurize(spark, archive, table, cap)
    rows = _rows(table)
    key = f"::file:{archive}"
    assert first.input_kind == "zip" and len(first.input_version or "") == 16
    assert first.listed == len(rows) == len(photos) + len(hostile)
    for name, data in photos.items():
        _assert_embeds(rows[f"zip://{name}{key}"], data)
    assert rows[f"zip://bomb.png{key}"]["status"] == "too_large"
    assert rows[f"zip://liar.png{key}"]["status"] == "decode_error"  # cut at its 100 bytes: a bad CRC
    assert "CRC" in rows[f"zip://liar.png{key}"]["error"]
    assert rows[f"zip://../evil.jpg{key}"]["status"] == rows[f"zip:///etc/abs.jpg{key}"]["status"] == "unsupported"
    assert "unsafe member name" in rows[f"zip://../evil.jpg{key}"]["error"]
    labels = dataset.with_labels(spark, read_table(spark, str(table)), LabelsConfig()).where("status = 'ok'")
    assert {Path(r["path"].split("::")[0]).name: r["label"] for r in labels.collect()} == {
        Path(n).name: n.split("/")[0] for n in photos
    }

    assert _featurize(spark, archive, table, cap).featurized == 0  # a rerun adds nothing
    changed = {**photos, "cats/coffee.jpg": _jpeg(inputs, "coffee.jpg", flip=True)}
    _zip(archive, changed | {k: v for k, v in hostile.items() if k != "liar.png"})
    redo = _featurize(spark, archive, table, cap)
    assert redo.featurized == 1 and redo.counts == {"ok": 1}  # the changed member only; its row replaced
    _assert_embeds(_rows(table)[f"zip://cats/coffee.jpg{key}"], changed["cats/coffee.jpg"])

    # A CSV inside names the images (relative to its folder); one it names is not there.
    inner = {"data/labels.csv": b"path,label\nimgs/a.jpg,cat\n./imgs/b.jpg,cup\nimgs/none.jpg,x\n"}
    inner |= {"data/imgs/a.jpg": photos["cats/chelsea.jpg"], "data/imgs/b.jpg": photos["cats/coffee.jpg"]}
    inner |= {"data/imgs/unnamed.jpg": photos["others/rocket.jpg"]}
    boxed = _zip(tmp_path / "boxed.zip", inner)
    named = _featurize(spark, boxed, table)
    assert named.counts == {"ok": 2, "read_error": 1}
    keys = {f"zip://data/imgs/{n}::file:{boxed}" for n in ("a.jpg", "b.jpg", "none.jpg")}
    assert keys <= set(_rows(table))
    source = dataset.read_source(spark, SourceConfig(source=str(boxed)))  # train's labels from the same CSV
    assert {r["path"] for r in source.collect()} == keys

    with pytest.raises(InputError, match="max_archive_members"):
        _featurize(spark, boxed, table, "read.max_archive_members=3")
