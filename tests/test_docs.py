"""The docs build (mkdocs --strict: no broken link or anchor, every page in the nav),
README.md stays a short front page, and its relative links resolve."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: Markdown links and images: [text](target) / ![alt](target).
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _relative_targets(text: str) -> list[str]:
    out = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http:, https:, mailto:, in-page anchors
        out.append(target.split("#", 1)[0])
    return out


def test_mkdocs_build_strict_passes(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "index.html").is_file()


def test_readme_is_short_and_states_the_test_command():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 300
    assert "make test" in text


def test_every_relative_link_in_readme_points_to_an_existing_file():
    targets = _relative_targets(README.read_text(encoding="utf-8"))
    assert targets, "README.md links to no docs page"
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
