"""Bad configuration and arguments through the real command line
(`imgfeat featurize`, and `imgfeat train`'s, `imgfeat score`'s and `imgfeat serve`'s own checks).

Each case runs `python -m imgfeat.cli` in a subprocess and must exit 2 with
ONE line on stderr that names the culprit (key and file, path, or name with
the closest valid names), and no stack trace. Every case also sets
`spark.master` to a bogus value: had Spark started before the check, the
error would be Spark's, so a pass also proves the check runs first. All
cases start at once (a module fixture), so the suite waits for the slowest.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from imgfeat.errors import ImgfeatError

pytestmark = pytest.mark.slow  # 21 processes, most of which import torch

NO_SPARK = ("--set", "spark.master=bogus://spark-must-not-start")
CASES = (
    "unknown key in file", "misspelled section", "wrong type in file", "out of range --set",
    "unknown --set key", "--set without =", "no input", "missing input", "empty input",
    "table under a file", "table is a photo folder", "unknown featurizer", "missing weights",
    "pinned sha256 differs", "score: unknown key", "score: no model", "score: missing input",
    "score: unknown model", "score: output under a file", "train: no table", "serve: no model",
    "serve: unknown model",
)


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    says: tuple[str, ...]  # fragments the one stderr line must contain


def _cases(tmp: Path) -> dict[str, Case]:
    photos = tmp / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    empty = tmp / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here\n")
    (tmp / "a_file").write_text("")
    checkpoint = tmp / "finetuned.pth"
    checkpoint.write_bytes(b"any bytes: the pin is checked on the file's hash, before it is read")

    def conf(name: str, text: str) -> str:
        (tmp / name).write_text(text)
        return str(tmp / name)

    typo = conf("typo.yaml", "featurizer:\n  nmae: resnet50\n")
    section = conf("section.yaml", "featurzer:\n  name: resnet50\n")
    wrong = conf("wrong.yaml", "read:\n  max_pixels: lots\n")
    feat = ("featurize", "--input", str(photos), "--table", str(tmp / "emb"))
    return {
        "unknown key in file": Case(("featurize", "--config", typo), (typo, "featurizer.nmae", "did you mean name")),
        "misspelled section": Case(("featurize", "--config", section), (section, "featurzer", "featurizer")),
        "wrong type in file": Case(("featurize", "--config", wrong), (wrong, "read.max_pixels", "integer", "'lots'")),
        "out of range --set": Case((*feat, "--set", "featurizer.batch_size=0"), ("featurizer.batch_size", "greater than or equal to 1")),
        "unknown --set key": Case((*feat, "--set", "read.max_pixel=9"), ("read.max_pixel", "did you mean max_pixels")),
        "--set without =": Case((*feat, "--set", "featurizer.batch_size"), ("featurizer.batch_size", "key=value")),
        "no input": Case(("featurize",), ("no input", "--input")),
        "missing input": Case(("featurize", "--input", str(tmp / "nope")), ("input path does not exist", str(tmp / "nope"))),
        "empty input": Case(("featurize", "--input", str(empty)), ("no images under", str(empty))),
        "table under a file": Case(
            ("featurize", "--input", str(photos), "--table", str(tmp / "a_file" / "emb")),
            ("not writable", str(tmp / "a_file")),
        ),
        "table is a photo folder": Case(
            ("featurize", "--input", str(photos), "--table", str(photos)), ("not a Delta table", str(photos))
        ),
        "unknown featurizer": Case(
            (*feat, "--featurizer", "efficientnet_lite"), ("'efficientnet_lite'", "closest", "efficientnet_lite0")
        ),
        "missing weights": Case(
            (*feat, "--featurizer", "resnet18", "--weights", str(tmp / "gone.pth")),
            ("weights file not found", str(tmp / "gone.pth")),
        ),
        "pinned sha256 differs": Case(
            (*feat, "--featurizer", "resnet18", "--weights", str(checkpoint),
             "--set", f"featurizer.weights_sha256={'0' * 64}"),
            (str(checkpoint), "0" * 64, "pinned"),
        ),
        "score: unknown key": Case(("score", "--set", "batchsize=8"), ("batchsize", "did you mean batch_size")),
        "score: no model": Case(("score", "--input", str(photos)), ("no model", "--model")),
        "score: missing input": Case(
            ("score", "--model", "models:/cats/1", "--input", str(tmp / "nope")),
            ("input path does not exist", str(tmp / "nope")),
        ),
        "score: unknown model": Case(
            ("score", "--model", "models:/no_such_model/1", "--input", str(photos)),
            ("cannot load model models:/no_such_model/1", "no_such_model"),
        ),
        "score: output under a file": Case(
            ("score", "--model", "models:/cats/1", "--input", str(photos), "--output", str(tmp / "a_file" / "scores")),
            ("not writable", str(tmp / "a_file")),
        ),
        "train: no table": Case(
            ("train", "--table", str(tmp / "nowhere")), ("no embeddings table", str(tmp / "nowhere"), "imgfeat featurize")
        ),
        "serve: no model": Case(("serve", "--port", "5999"), ("no model", "--model")),
        "serve: unknown model": Case(
            ("serve", "--model", "models:/no_such_model/latest"), ("no registered model named 'no_such_model'",)
        ),
    }


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str
    seconds: float


def _run_all(commands: dict[str, list[str]], cwd: Path) -> dict[str, Result]:
    started = time.monotonic()
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "imgfeat.cli", *cmd], cwd=cwd,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name, cmd in commands.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        results[name] = Result(proc.returncode, out, err, time.monotonic() - started)
    return results


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> tuple[dict[str, Case], dict[str, Result]]:
    tmp = tmp_path_factory.mktemp("cli")
    cases = _cases(tmp)
    assert tuple(cases) == CASES
    commands = {  # serve starts no Spark (and has no spark section)
        name: [case.args[0], *(NO_SPARK if case.args[0] != "serve" else ()), *case.args[1:]]
        for name, case in cases.items()
    }
    commands["--debug"] = ["--debug", *commands["unknown key in file"]]
    return cases, _run_all(commands, tmp)


@pytest.mark.parametrize("name", CASES)
def test_bad_config_or_argument_is_one_line_and_exit_2(cli, name):
    cases, results = cli
    result, case = results[name], cases[name]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.code == ImgfeatError.exit_code, (name, result.code, result.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("imgfeat: error: "), result.stderr[-3000:]
    missing = [s for s in case.says if s not in lines[0]]
    assert not missing, f"{lines[0]!r} does not name {missing}"
    assert result.stdout == ""


def test_debug_shows_the_stack_trace(cli):
    _, results = cli
    debug = results["--debug"]
    assert debug.code == 1 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr
