"""Fine-tuning: the images it trains on, its bad inputs, and a fine-tuned featurizer
used end to end (featurize, train, score) like any other."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from imgfeat import cv, delta, finetune
from imgfeat.cli import main
from imgfeat.config import FeaturizeConfig, FinetuneConfig, SplitConfig, TrainConfig, load_config
from imgfeat.dev.samples import spark_path, write_labeled_photos
from imgfeat.featurize import prepare_path
from imgfeat.featurizers import load_featurizer, resolve_featurizer
from imgfeat.featurizers.backbone import build_network, checkpoint_state_dict
from imgfeat.sources import list_images

CLASSES = ("brick", "grass")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return write_labeled_photos(tmp_path_factory.mktemp("finetune") / "photos", classes=CLASSES, per_class=14)


def _cfg(photos: Path, tmp_path: Path, *overrides: str) -> FinetuneConfig:
    return load_config(
        FinetuneConfig, overrides=[f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", *overrides], input=str(photos)
    )


# ----------------------------------------------------------------------------- pure parts
def test_every_rank_takes_the_same_number_of_steps_and_every_image_is_seen():
    for n, world in ((10, 2), (11, 2), (7, 3), (5, 1)):
        shards = [finetune.shard(n, rank, world, seed=3) for rank in range(world)]
        assert len({len(s) for s in shards}) == 1
        assert set(np.concatenate(shards)) == set(range(n))
    assert not np.array_equal(finetune.shard(10, 0, 2, seed=1), finetune.shard(10, 0, 2, seed=2))


def test_learning_rate_warms_up_then_decays_to_zero():
    factors = [finetune.warmup_cosine(s, 3, 10) for s in range(11)]
    assert factors[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert factors[3] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(factors[3:], factors[4:], strict=False))


@pytest.mark.parametrize("name", ["resnet18", "tv:squeezenet1_1"])
def test_a_saved_backbone_is_a_checkpoint_that_embeds_identically(name, tmp_path):
    spec = resolve_featurizer(name, weights="random:1")
    network = build_network(spec)
    with torch.no_grad():  # change the weights, as training would
        for p in network.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "backbone.pt"
    torch.save(checkpoint_state_dict(network), path)
    tuned = resolve_featurizer(name, weights=str(path))
    assert tuned.fingerprint != spec.fingerprint
    pixels = np.random.default_rng(0).integers(0, 256, (2, spec.input_size, spec.input_size, 3), dtype=np.uint8)
    model = load_featurizer(tuned)
    with torch.inference_mode():
        expected = network.eval()(model.to_input(pixels)).numpy()
    np.testing.assert_allclose(model.embed(pixels), expected, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- the images it trains on
def test_fine_tuning_sees_only_the_train_split_and_skips_undecodable_images(spark, photos, tmp_path):
    root = tmp_path / "photos"
    shutil.copytree(photos, root)
    (root / "brick" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    shutil.copy(root / "grass" / "grass_0003.jpg", root / "grass" / "same_bytes.jpg")  # duplicate content
    shutil.copy(root / "grass" / "grass_0004.jpg", root / "unsorted.jpg")  # its folder is no class
    files = sorted(p for p in root.rglob("*.jpg"))
    labels = pd.DataFrame(
        {"path": [spark_path(p) for p in files if p.parent != root], "kind": [p.parent.name for p in files if p.parent != root]}
    )
    labels.to_csv(root / "kinds.csv", index=False)
    cfg = _cfg(root, tmp_path, f"labels.source={root / 'kinds.csv'}", "labels.label=kind", "split.seed=7")
    with list_images(spark, str(root), ["jpg"]) as listing:
        plan = finetune.plan(spark, cfg, listing.frame, listing.count)

    # The split `imgfeat train` computes (the one split function, same seed), independently.
    hashes = {spark_path(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    labeled_ok = {spark_path(p) for p in files if p.parent != root and p.name != "broken.jpg"}
    split = {
        path: "test" if s == "test" else ("validation" if fold == 0 else "train")
        for path, (s, fold) in _split_of(spark, sorted(labeled_ok), SplitConfig(seed=7)).items()
    }
    trained = {p for p, _ in plan.train}
    assert trained == {p for p in labeled_ok if split[p] == "train"}  # folds 1..k-1 of the non-test images
    assert {p for p, _ in plan.validation} == {p for p in labeled_ok if split[p] == "validation"}  # fold 0
    assert plan.train_sha256 == {hashes[p] for p in trained}
    assert not plan.train_sha256 & {hashes[p] for p in labeled_ok if split[p] != "train"}  # no leakage
    assert split[spark_path(root / "grass" / "same_bytes.jpg")] == split[spark_path(root / "grass" / "grass_0003.jpg")]
    assert plan.classes == CLASSES
    assert all(plan.classes[int(t)] == Path(p).parent.name for p, t in plan.train + plan.validation)
    assert plan.counts["skipped_decode_error"] == 1 and "broken.jpg" in plan.skipped_examples[0]
    assert plan.counts["unlabeled"] == 1
    assert plan.counts["train"] + plan.counts["validation"] + plan.counts["test_held_out"] == len(labeled_ok)


def _split_of(spark, paths: list[str], split: SplitConfig, label=lambda p: p.split("/")[-2]) -> dict[str, tuple]:
    """path → (split, fold) as `cv.with_split` puts the images (hashed as fine-tuning hashes them)."""
    checker = load_featurizer(resolve_featurizer(finetune.CHECKER))
    classes = sorted({label(p) for p in paths})
    rows = []
    for p in paths:
        prepared = prepare_path(p, checker, 10**8)
        rows.append((p, prepared.content_sha256, prepared.phash, float(classes.index(label(p)))))
    frame = spark.createDataFrame(rows, "path string, content_sha256 string, phash bigint, label_index double")
    return {r.path: (r.split, r.fold) for r in cv.with_split(frame, split, stratify=True).collect()}


# ----------------------------------------------------------------------------- bad input: one line, exit 2
def _only(tmp_path: Path, rows: list[tuple[str, object]], name: str) -> Path:
    path = tmp_path / name
    pd.DataFrame(rows, columns=["path", "y"]).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "case, expected",
    [
        ("one_class", "at least 2 label values"),
        ("missing_column", "lacks column(s) nope"),
        ("no_labels", "has a label"),
        ("batch_too_big", "too few images for the batch size"),
        ("no_network", "no network to fine-tune"),
        ("tabular", "fine-tuning uses images only"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_training(spark, photos, tmp_path, capsys, case, expected):
    files = sorted(photos.rglob("*.jpg"))
    sets = {
        "one_class": ["labels.label=y", f"labels.source={_only(tmp_path, [(spark_path(p), 'a') for p in files], 'one.csv')}"],
        "missing_column": [f"labels.source={photos / 'labels.csv'}", "labels.label=nope"],
        "no_labels": ["labels.label=y", f"labels.source={_only(tmp_path, [('/elsewhere/x.jpg', 'a')], 'none.csv')}"],
        "batch_too_big": ["batch_size=64"],
        "no_network": ["featurizer.name=grayscale16"],
        "tabular": [f"labels.source={photos / 'labels.csv'}", "labels.numeric=[file]"],
    }[case]
    args = ["finetune", "--input", str(photos), "--set", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert "finetune: epoch" not in captured.out + captured.err


def test_a_class_missing_from_the_trained_folds_is_one_line_exit_2(spark, photos, tmp_path, capsys):
    """A class whose only non-test image is in fold 0 (validation) would never be learned."""
    files = sorted(p for p in photos.rglob("*.jpg"))
    rare = spark_path(files[0])

    def label(p: str) -> str:
        return "rare" if p == rare else p.split("/")[-2]

    # A one-image class sits where the seed's rotation of its stratum ("2.0": brick, grass, rare) puts the
    # middle of its one image; fold 0 of the non-test images is [0.1, 0.2) with a test share of 0.1.
    from pyspark.sql import functions as F

    turns = spark.range(200).select(
        "id", (F.pmod(F.xxhash64(F.col("id").cast("int"), F.lit("2.0")), F.lit(1_000_000)) / 1_000_000).alias("t")
    )
    seed = next(r.id for r in turns.orderBy("id").collect() if 0.1 <= (0.5 + r.t) % 1 < 0.2)
    split = SplitConfig(seed=seed, test=0.1)
    assert _split_of(spark, [spark_path(p) for p in files], split, label)[rare] == ("train", 0)
    labels = _only(tmp_path, [(spark_path(p), label(spark_path(p))) for p in files], "rare.csv")
    argv = ["finetune", "--input", str(photos), "--set", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            "--set", f"labels.source={labels}", "--set", "labels.label=y", "--set", f"split.seed={seed}",
            "--set", "split.test=0.1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "class 'rare' has no images in the folds fine-tuning trains on" in err[0], err


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_a_fine_tuned_featurizer_featurizes_trains_and_scores_like_any_other(spark, photos, tmp_path, monkeypatch):
    """One epoch through TorchDistributor (2 CPU processes) → featurize with models:/NAME/latest
    beside the pretrained rows → train on both → score raw images with the bundled model."""
    import mlflow

    from imgfeat.runs import featurize_run, finetune_run, train_run

    monkeypatch.setenv("IMGFEAT_CACHE", str(tmp_path / "cache"))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    table = str(tmp_path / "embeddings")

    def featurize(*overrides: str):
        cfg = load_config(FeaturizeConfig, overrides=[f"tracking.uri={uri}", *overrides], input=str(photos), table=table)
        return featurize_run(cfg, spark)

    pretrained = featurize()
    tuned = finetune_run(
        _cfg(photos, tmp_path, "epochs=1", "batch_size=4", "distributor.num_processes=2", "model_name=tuned"), spark
    )
    assert tuned.model_version == "1" and len(tuned.epochs) == 1
    assert tuned.epochs[0]["loss"] > 0 and tuned.epochs[0]["images_per_second"] > 0
    assert tuned.counts["train"] >= 8 and tuned.counts["test_held_out"] > 0

    again = featurize("featurizer.weights=models:/tuned/latest")
    assert again.fingerprint == tuned.fingerprint != pretrained.fingerprint
    assert again.counts == {"ok": 28}  # the pretrained rows are not "unchanged" for it
    by_fingerprint = delta.read_table(spark, table).groupBy("featurizer_fingerprint").count().collect()
    assert dict(by_fingerprint) == {pretrained.fingerprint: 28, tuned.fingerprint: 28}

    trained = train_run(
        load_config(
            TrainConfig,
            overrides=[f"tracking.uri={uri}", "model_name=both", "baselines.linear=false", "baselines.raw_pixels=false"],
            table=table,
            featurizers=["efficientnet_lite0", {"name": "efficientnet_lite0", "weights": "models:/tuned/latest"}],
        ),
        spark,
    )
    assert [f.fingerprint for f in trained.result.features.featurizers] == [pretrained.fingerprint, tuned.fingerprint]
    assert trained.result.features.dim == 2 * 1280

    model = mlflow.pyfunc.load_model(f"models:/both/{trained.model_version}")
    images = sorted(photos.rglob("*.jpg"))[:4]
    scored = model.predict(pd.DataFrame({"content": [p.read_bytes() for p in images]}))
    assert list(scored["status"]) == ["ok"] * 4
    assert set(scored["predicted_class"]) <= set(CLASSES)
    # The bundled second featurizer is the fine-tuned network, not the pretrained one.
    bundled = model.unwrap_python_model().featurizers
    reference = load_featurizer(resolve_featurizer("efficientnet_lite0", weights="models:/tuned/1"))
    pixels = np.stack([prepare_path(str(images[0]), reference, 10**8).pixels])
    np.testing.assert_allclose(bundled[1].embed(pixels), reference.embed(pixels), rtol=1e-3, atol=1e-4)
    assert not np.allclose(bundled[0].embed(pixels), reference.embed(pixels), atol=1e-3)


@pytest.mark.slow
def test_a_killed_fine_tuning_run_registers_no_version(spark, photos, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from imgfeat import faults, tracking
    from imgfeat.runs import finetune_run

    monkeypatch.setenv(faults.KILL_FINETUNE, str(tmp_path / "killed"))
    cfg = _cfg(photos, tmp_path, "epochs=1", "batch_size=4", "model_name=killed")
    with pytest.raises(RuntimeError):
        finetune_run(cfg, spark)
    assert (tmp_path / "killed").exists()
    tracking.use_store(cfg.tracking)
    assert MlflowClient().search_model_versions("name='killed'") == []
