"""`imgfeat select`: the recommendation rule, the candidate checks, and one small run end to end."""

from __future__ import annotations

import pytest

from imgfeat.cli import main
from imgfeat.config import SelectConfig, TrainConfig, load_config
from imgfeat.errors import ConfigError, FeaturizerError
from imgfeat.selection import Candidate, check_candidates, offline_candidates, recommend


def _c(name: str, mean: float, std: float, ms: float) -> Candidate:
    return Candidate(name, 100, mean, std, ms)


def test_best_mean_wins_unless_a_cheaper_one_is_within_one_std_of_it():
    best, close_cheap, far_cheaper = _c("big", 0.90, 0.03, 20.0), _c("small", 0.88, 0.02, 5.0), _c("floor", 0.80, 0.01, 0.5)
    assert recommend([best, close_cheap, far_cheaper]) == close_cheap  # 0.88 >= 0.90 - 0.03, and 4x cheaper
    just_out = _c("small", 0.869, 0.02, 5.0)
    assert recommend([best, just_out, far_cheaper]) == best  # 0.869 < 0.87: accuracy first
    pair = _c("big+small", 0.93, 0.01, 25.0)
    assert recommend([best, close_cheap, pair]) == pair  # the bar is the best's own std: 0.92
    assert recommend([_c("b", 0.9, 0.0, 3.0), _c("a", 0.9, 0.0, 3.0)]).name == "a"  # full tie: by name


def test_default_candidates_are_the_offline_ones_and_the_floor_comes_last():
    assert "efficientnet_lite0" in offline_candidates() and "grayscale16" not in offline_candidates()
    assert check_candidates((), "grayscale16") == (*offline_candidates(), "grayscale16")


def test_unknown_or_offline_less_candidates_are_refused_before_spark(tmp_path, capsys):
    with pytest.raises(FeaturizerError, match="unknown featurizer 'resnet5'"):
        check_candidates(("resnet5",), "grayscale16")
    with pytest.raises(FeaturizerError, match="'resnet50'.*not available offline"):
        check_candidates(("efficientnet_lite0", "resnet50"), "grayscale16")
    with pytest.raises(ConfigError, match="no candidates"):
        check_candidates(("grayscale16",), "grayscale16")
    (tmp_path / "a.jpg").write_bytes(b"x")
    for argv, message in [
        (["--candidates", "resnet50"], "not available offline"),
        (["--candidates", "nope_net"], "unknown featurizer"),
        (["--set", "split.folds=1"], "split.folds"),
        (["--set", "sample=3"], "sample"),
    ]:
        code = main(["select", "--input", str(tmp_path), "--table", str(tmp_path / "t"),
                     "--set", "spark.master=bogus://spark-must-not-start", *argv])
        assert code == 2, argv
        assert message in capsys.readouterr().err, argv


def test_bad_select_input_is_one_line_exit_2(tmp_path, capsys):
    assert main(["select", "--input", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imgfeat: error:") and "\n" not in err


@pytest.mark.slow
def test_select_featurizes_the_sample_into_the_table_and_train_auto_uses_its_choice(spark, tmp_path):
    from deltalake import DeltaTable
    from mlflow import MlflowClient

    from imgfeat.dev.samples import write_labeled_photos
    from imgfeat.runs import select_run, train_run

    # 20 sampled per class (~16 non-test): the sample follows a hash of the path, which changes with
    # tmp_path, and a class must not land in one fold alone (train refuses that) whatever it is.
    photos = write_labeled_photos(tmp_path / "photos", classes=("brick", "grass"), per_class=30)
    uri, table = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "emb")
    sets = [f"tracking.uri={uri}", "split.folds=2", "timing_images=4", "batch_size=8"]
    cfg = load_config(SelectConfig, overrides=sets, input=str(photos), table=table,
                      candidates="efficientnet_lite0", sample=40)
    summary = select_run(cfg, spark)

    names = [c.name for c in summary.candidates]
    assert names == ["efficientnet_lite0", "grayscale16"]  # one learned candidate: no pair
    assert summary.sample == 40 and summary.lines()[-1] == f"recommend: {summary.choice.name}"
    best = max(summary.candidates, key=lambda c: c.mean)
    tied = [c for c in summary.candidates if c.mean >= best.mean - best.std]
    assert summary.choice == min(tied, key=lambda c: c.ms_per_image)
    assert all(c.ms_per_image > 0 and 0 <= c.mean <= 1 for c in summary.candidates)

    rows = DeltaTable(table).to_pyarrow_table(columns=["path", "featurizer"]).to_pylist()
    by = {f: sorted(r["path"] for r in rows if r["featurizer"] == f) for f in names}
    assert len(by["efficientnet_lite0"]) == 40 and by["efficientnet_lite0"] == by["grayscale16"]  # the same sample
    per_class = {label: sum(f"/{label}/" in p for p in by["grayscale16"]) for label in ("brick", "grass")}
    assert per_class == {"brick": 20, "grass": 20}  # stratified

    client = MlflowClient(uri)
    children = client.search_runs(
        [client.get_run(summary.run_id).info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{summary.run_id}'",
    )
    assert sorted(r.data.tags["imgfeat.candidate"] for r in children) == sorted(names)
    # Select featurizes and times with the runtime `imgfeat featurize` would use (auto: ONNX on CPU).
    assert summary.runtimes["efficientnet_lite0"] == "onnxruntime"
    assert {r.data.tags["imgfeat.candidate"]: r.data.tags["imgfeat.runtime"] for r in children} == summary.runtimes
    assert client.get_run(summary.run_id).data.tags["imgfeat.recommend"] == summary.choice.name

    trained = train_run(load_config(TrainConfig, overrides=[
        f"tracking.uri={uri}", "model_name=null", "split.folds=2", "baselines.linear=false",
        "baselines.raw_pixels=false"], table=table, featurizers=["auto"]), spark)
    assert [f.name for f in trained.result.features.featurizers] == summary.choice.name.split("+")
    assert client.get_run(trained.run_id).data.tags["imgfeat.featurizers_chosen_by"] == summary.run_id
