"""Run Python with torch (and timm, torchvision) unimportable, as on an `imgfeat[infer]` worker.

`python -m tests.torchless CODE` executes CODE with an import hook that makes
those packages raise ModuleNotFoundError, the way a worker without them would.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

BLOCKED = ("torch", "timm", "torchvision")


class _Absent(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):  # noqa: ANN001 - the finder protocol
        if name.split(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):  # noqa: ANN001
        raise ModuleNotFoundError(f"No module named {spec.name!r}", name=spec.name)

    def exec_module(self, module):  # noqa: ANN001
        raise AssertionError("unreachable")


def block() -> None:
    sys.meta_path.insert(0, _Absent())


if __name__ == "__main__":
    block()
    exec(compile(sys.argv[1], "<torchless>", "exec"), {"__name__": "__torchless__"})
