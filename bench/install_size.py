"""Disk size of distributions plus their install-time dependency closure, in this venv.

    .venv/bin/python bench/install_size.py torch numpy pillow pyarrow
    .venv/bin/python bench/install_size.py onnxruntime numpy pillow pyarrow

Sums the files each installed distribution lists (its RECORD), following
`Requires-Dist` (extras left out): what `pip install` of those names adds to a
venv. README "Workers without torch" records the figures.
"""

from __future__ import annotations

import os
import re
import sys
from importlib.metadata import PackageNotFoundError, distribution


def closure(roots: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop().lower()
        if name in seen:
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        seen.add(name)
        todo += [re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0] for r in dist.requires or [] if "extra ==" not in r]
    return seen


def size(name: str) -> int:
    dist = distribution(name)
    return sum(os.path.getsize(p) for p in (dist.locate_file(f) for f in dist.files or []) if os.path.isfile(p))


if __name__ == "__main__":
    names = closure(sys.argv[1:])
    sizes = {n: size(n) for n in names}
    print(f"{' + '.join(sys.argv[1:])}: {len(names)} distributions, {sum(sizes.values()) / 2**20:.0f} MiB")
    for name in sorted(sizes, key=sizes.get, reverse=True)[:8]:
        print(f"  {name}: {sizes[name] / 2**20:.0f} MiB")
