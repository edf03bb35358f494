"""`imgfeat insights` end to end on the shared trained model, looked at in headless Chromium."""

from __future__ import annotations

import io
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from imgfeat.cli import main
from imgfeat.config import InsightsConfig, load_config
from imgfeat.report import SECTIONS
from imgfeat.runs import insights_run
from tests.browser import browser, console_errors, png_pixels  # noqa: F401  (fixture)
from tests.trainset import CLASSES, MODEL_NAME, PER_CLASS, trainset  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow
#: Set to a folder (docs/insights) to keep the section screenshots for the README.
SHOTS = os.environ.get("IMGFEAT_SCREENSHOTS")


#: The `Insights` the module's report was rendered from.
_DATA: list = []
#: Copies planted beside the shared set's photos: (original, copy kind), and one byte-identical copy.
PLANTED = [("brick/brick_0002.jpg", k) for k in ("resized", "reencoded", "brighter")] + [
    ("gravel/gravel_0005.jpg", k) for k in ("resized", "darker")
]
SAME_BYTES = ("grass/grass_0007.jpg", "grass/grass_0007_bytes.jpg")
#: Rows of the report's table: the shared set and the planted copies.
IMAGES = len(CLASSES) * PER_CLASS + len(PLANTED) + 1


@pytest.fixture(scope="module")
def planted_table(spark, trainset, tmp_path_factory) -> tuple[str, Path]:
    """The shared set's photos plus planted copies, featurized into a table of one version (0, the
    version the shared model trained on), so `imgfeat insights --table` reads them as its rows."""
    import shutil

    from PIL import Image

    from imgfeat.config import FeaturizeConfig
    from imgfeat.dev.copies import planted_copy
    from imgfeat.runs import featurize_run

    root = tmp_path_factory.mktemp("planted")
    photos = root / "photos"
    shutil.copytree(trainset.photos, photos)
    for original, kind in PLANTED:
        path = photos / original
        planted_copy(Image.open(path).convert("RGB"), kind).save(path.with_name(f"{path.stem}_{kind}.jpg"), quality=90)
    shutil.copy(photos / SAME_BYTES[0], photos / SAME_BYTES[1])
    table = str(root / "embeddings")
    cfg = load_config(FeaturizeConfig, overrides=["tracking.enabled=false"], input=str(photos), table=table)
    assert featurize_run(cfg, spark).version == trainset.featurized.version == 0
    return table, photos


@pytest.fixture(scope="module")
def report(spark, trainset, planted_table, tmp_path_factory):
    from imgfeat import report as rendering

    out = tmp_path_factory.mktemp("insights")
    cfg = load_config(
        InsightsConfig,
        overrides=[f"tracking.uri={trainset.tracking_uri}", "projection=pca"],
        model=f"models:/{MODEL_NAME}/1",
        table=planted_table[0],
        output=str(out),
    )
    write = rendering.write
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rendering, "write", lambda data, folder: (_DATA.append(data), write(data, folder))[1])
        return insights_run(cfg, spark)


def test_a_model_scoring_with_onnx_runtime_has_its_activation_maps(report, trainset):
    """The shared model is trained with the defaults (runtime auto: ONNX on CPU); its maps
    come from the torch network of the same weights, checked against the graph."""
    from mlflow.models import Model

    from imgfeat import scoring, tracking
    from imgfeat.config import TrackingConfig
    from imgfeat.featurizers.featurizer import TorchFeaturizer
    from imgfeat.model import torch_featurizers

    tracking.use_store(TrackingConfig(uri=trainset.tracking_uri))
    local = scoring.resolve_model(f"models:/{MODEL_NAME}/1").local_dir
    assert "onnx_0" in Model.load(local).flavors["python_function"]["artifacts"]  # trained with a graph
    assert not isinstance(scoring.load_image_model(local).featurizers[0], TorchFeaturizer)  # scores with it
    trunk = torch_featurizers(local)[0]
    assert isinstance(trunk, TorchFeaturizer) and hasattr(trunk.network, "feature_map")

    (data,) = _DATA
    size = trunk.spec.input_size
    assert data.maps_note is None and data.maps
    assert len(data.maps) <= 2 * 2 * len(CLASSES)  # activation_maps per class and outcome
    for m in data.maps:
        assert m.image.shape == (size, size, 3) and m.image.dtype == np.uint8
        assert m.heat.shape == (size, size) and np.isfinite(m.heat).all()
        assert m.heat.min() >= 0 and m.heat.max() <= 1 + 1e-6
    assert any(m.heat.max() > 0.99 for m in data.maps)  # scaled to its peak: a map, not zeros
    html = Path(report.report).read_text()
    section = html[html.index("<section id='activation-maps'>") :]
    section = section[: section.index("</section>")]
    assert "not a CNN" not in html and "no activation maps" not in section
    assert section.count("<figure><img src='data:image/png;base64,") == len(data.maps)


def test_maps_are_refused_when_the_torch_network_does_not_give_the_graphs_embeddings(spark, trainset):
    from imgfeat import insights, scoring, tracking
    from imgfeat.config import TrackingConfig, TrainConfig
    from imgfeat.dataset import read_labeled
    from imgfeat.featurizers import load_featurizer
    from imgfeat.model import torch_featurizers

    tracking.use_store(TrackingConfig(uri=trainset.tracking_uri))
    local = scoring.resolve_model(f"models:/{MODEL_NAME}/1").local_dir
    model = scoring.load_image_model(local)
    features = model.features
    cfg = load_config(TrainConfig, table=trainset.table)
    rows = read_labeled(spark, cfg, features=features, version=trainset.featurized.version).rows
    predicted = insights.with_predictions(rows, features, model.booster.save_raw("ubj"), ["emb_0"])
    spec = features.featurizers[0]
    other = load_featurizer(replace(spec, weights="random:0", weights_sha256=None))  # same network, other weights
    maps, note = insights.activation_maps(predicted, features, model, 1, trunk=lambda: other)
    assert maps == [] and "does not give the embeddings the model scores with" in note, note
    maps, note = insights.activation_maps(predicted, features, model, 1, trunk=lambda: torch_featurizers(local)[0])
    assert note is None and 0 < len(maps) <= 2 * len(CLASSES)


def test_the_report_lists_each_planted_copy_apart_from_look_alikes_and_no_distinct_photo(report, planted_table):
    """Each planted copy is a near-copy of its original (and of the other copies of it), the
    byte-identical copy an exact copy, no distinct photo is either, and none straddles test."""
    import itertools

    from imgfeat.dev.samples import spark_path

    (data,) = _DATA
    photos = planted_table[1]
    groups: dict[str, set[str]] = {}
    for original, kind in PLANTED:
        path = photos / original
        groups.setdefault(spark_path(path), {spark_path(path)}).add(spark_path(path.with_name(f"{path.stem}_{kind}.jpg")))
    expected = {tuple(sorted(p)) for g in groups.values() for p in itertools.combinations(g, 2)}
    near, exact = data.pairs["near_copies"], data.pairs["exact_copies"]
    assert near.count == len(expected) == report.metrics["near_copy_pairs"]
    assert set(zip(near.shown.path_a, near.shown.path_b, strict=True)) == expected
    same = tuple(sorted(spark_path(photos / p) for p in SAME_BYTES))
    assert exact.count == 1 and list(zip(exact.shown.path_a, exact.shown.path_b, strict=True)) == [same]
    for kind in (near, exact):  # the split kept each group together
        assert (kind.shown.split_a == kind.shown.split_b).all() and kind.leaking == 0
    lookalikes = data.pairs["lookalikes"].shown
    assert not set(zip(lookalikes.path_a, lookalikes.path_b, strict=True)) & (expected | {same})
    html = Path(report.report).read_text()
    assert all(f"<h3 id='{kind}'>" in html for kind in ("exact-copies", "near-copies", "lookalikes"))


def test_the_run_is_tracked_with_lineage_and_the_report_as_artifact(report, trainset):
    client = MlflowClient(trainset.tracking_uri)
    run = client.get_run(report.run_id)
    tags = run.data.tags
    assert tags["imgfeat.job"] == "insights" and tags["imgfeat.model_version"] == "1"
    assert tags["imgfeat.train_run_id"] == trainset.trained.run_id
    assert tags["imgfeat.embeddings_version"] == str(trainset.featurized.version)
    assert [a.path for a in client.list_artifacts(report.run_id)] == ["report.html"]
    assert run.data.metrics["sampled"] == IMAGES  # the whole table: fewer than 2000
    assert "near_duplicates" in run.data.metrics and "novel" in run.data.metrics
    assert report.counts == {"ok": IMAGES}


def test_the_report_reads_in_a_real_browser(report, browser, tmp_path):
    browser.get(Path(report.report).resolve().as_uri())
    browser.implicitly_wait(2)
    assert console_errors(browser) == []
    for section in SECTIONS:
        assert browser.find_element("id", section).is_displayed(), section
    points = browser.execute_script(
        "return Bokeh.documents[0].get_model_by_name('projection_points').data_source.data.x.length"
    )
    assert points == report.sampled == IMAGES
    broken = browser.execute_script(
        "return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)"
    )
    assert broken == [] and browser.execute_script("return document.images.length") > 10
    hover_thumbs = browser.execute_async_script(
        """const done = arguments[0];
        const uris = Bokeh.documents[0].get_model_by_name('projection_points').data_source.data.thumb;
        Promise.all(uris.map(u => new Promise(ok => { const i = new Image(); i.onload = () => ok(i.naturalWidth > 0);
            i.onerror = () => ok(false); i.src = u; }))).then(r => done(r.filter(x => !x).length));"""
    )
    assert hover_thumbs == 0  # every hover thumbnail decodes too

    plot = browser.find_element("id", "projection")
    browser.execute_script("arguments[0].scrollIntoView()", plot)
    shot = png_pixels(plot.screenshot_as_png).astype(int)
    assert shot.shape[0] > 400, shot.shape  # the plot has its height: it rendered
    coloured = (shot.max(axis=2) - shot.min(axis=2)) > 80  # class colours, not grey axes on white
    assert coloured.mean() > 0.002, "the projection's plot area holds no coloured points"
    _keep_screenshots(browser, tmp_path)


def _keep_screenshots(browser, tmp_path: Path) -> None:
    """One PNG per section (small), in SHOTS when set."""
    folder = Path(SHOTS) if SHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    for section in SECTIONS:
        element = browser.find_element("id", section)
        browser.execute_script("arguments[0].scrollIntoView()", element)
        png = element.screenshot_as_png
        assert png_pixels(png).std() > 5, f"section {section} renders blank"
        (folder / f"{section}.png").write_bytes(png)


def test_bad_input_is_one_line_and_exit_2(trainset, tmp_path, capsys):
    uri = f"--set=tracking.uri={trainset.tracking_uri}"
    cases = {
        "models:/nope/1": "cannot load model",
        f"models:/{MODEL_NAME}/1 --sample 100000": "larger than",
        f"models:/{MODEL_NAME}/1 --table {tmp_path / 'missing'}": "no embeddings table",
    }
    for args, message in cases.items():
        model, *rest = args.split()
        assert main(["insights", uri, "--model", model, "--output", str(tmp_path), *rest]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


def test_scoring_says_a_cat_is_unlike_the_training_textures(trainset):
    from PIL import Image
    from skimage.data import chelsea

    from imgfeat import scoring, tracking
    from imgfeat.config import TrackingConfig

    tracking.use_store(TrackingConfig(uri=trainset.tracking_uri))
    model = scoring.load_image_model(scoring.resolve_model(f"models:/{MODEL_NAME}/1").local_dir)
    cat = io.BytesIO()
    Image.fromarray(chelsea()).save(cat, format="JPEG")
    known = [p.read_bytes() for c in CLASSES for p in sorted((trainset.photos / c).glob("*.jpg"))[:3]]
    out = model.score(pd.DataFrame({"content": [*known, cat.getvalue()]}))
    assert out["status"].eq("ok").all()
    assert out["novelty"].iloc[-1] == 100.0  # farther than any training texture from its neighbour
    assert out["novelty"].iloc[:-1].max() < 99  # the table's own images: typical (many at 0: in the reference)
