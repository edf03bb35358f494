"""The wheel ships the library only: no dev-only code (imgfeat/dev/), tests, bench or notebooks.

Builds the wheel the way a release would (offline: setuptools from the venv, no
build isolation) from a copy of the clone's files, so that a stale `build/` or
`*.egg-info` in the working tree can neither add files to it nor be written by it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _source_files() -> list[str]:
    """The clone's files as git sees them: tracked plus untracked-but-not-ignored."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    done = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=False,
    )
    if done.returncode != 0:
        pytest.skip("not a git clone")
    return [name for name in done.stdout.decode().split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> list[str]:
    src = tmp_path_factory.mktemp("src")
    for name in _source_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        check=True, capture_output=True,
    )
    (wheel,) = out.glob("imgfeat-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_wheel_ships_the_library(wheel_names):
    for name in ("imgfeat/__init__.py", "imgfeat/model.py", "imgfeat/model_code.py", "imgfeat/cli.py",
                 "imgfeat/featurizers/__init__.py", "imgfeat/runs/__init__.py"):
        assert name in wheel_names, name
    assert any(n.endswith(".dist-info/entry_points.txt") for n in wheel_names)


def test_wheel_leaves_out_dev_code_tests_bench_and_notebooks(wheel_names):
    dev = [n for n in wheel_names if n.startswith("imgfeat/dev/")]
    assert dev == [], dev
    outside = [n for n in wheel_names if not (n.startswith("imgfeat/") or ".dist-info/" in n)]
    assert outside == [], outside  # no tests/, bench/, notebooks/, jobs/, scripts/ (top-level) files
    for gone in ("bench.py", "demo.py", "samples.py", "defect_samples.py"):
        assert not any(n.endswith("/" + gone) for n in wheel_names), gone


def test_editable_install_still_imports_dev_code():
    """`make setup` installs the clone editable: the excluded subpackage must stay importable there."""
    done = subprocess.run(
        [sys.executable, "-c", "import imgfeat.dev.samples, imgfeat.dev.defect_samples; print(imgfeat.dev.__file__)"],
        cwd=Path("/"), capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).parent == ROOT / "imgfeat" / "dev"


def test_bench_from_a_wheel_says_it_is_a_development_command(monkeypatch, capsys):
    from imgfeat.cli import main

    monkeypatch.setitem(sys.modules, "imgfeat.dev.bench", None)  # as if imgfeat/dev/ were not installed
    assert main(["bench", "--n", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["imgfeat bench is a development command: run it from a clone (`make bench`)"]
