"""Run a Databricks source-format notebook locally: the globals Databricks provides.

`run_notebook(path, spark, widgets)` executes the notebook as a Python script
(`# MAGIC` cells are comments) with `spark`, `dbutils`, `display` and
`displayHTML` defined. `dbutils.widgets` behaves like a job run's: a value
passed in `widgets` wins, any other widget has its declared default, and
reading an undeclared widget fails as it does on Databricks.
"""

from __future__ import annotations

import runpy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Widgets:
    """The part of `dbutils.widgets` the notebooks use."""

    def __init__(self, values: Mapping[str, str]):
        self._values = dict(values)
        self._defaults: dict[str, str] = {}
        self.labels: dict[str, str | None] = {}
        self.choices: dict[str, list[str]] = {}

    def text(self, name: str, defaultValue: str, label: str | None = None) -> None:
        self._defaults[name] = defaultValue
        self.labels[name] = label

    def dropdown(self, name: str, defaultValue: str, choices: Sequence[str], label: str | None = None) -> None:
        if defaultValue not in choices:
            raise ValueError(f"widget {name}: default {defaultValue!r} not in {list(choices)}")
        if name in self._values and self._values[name] not in choices:
            raise ValueError(f"widget {name}: {self._values[name]!r} not in {list(choices)}")
        self._defaults[name] = defaultValue
        self.labels[name], self.choices[name] = label, list(choices)

    def get(self, name: str) -> str:
        if name not in self._defaults:
            raise KeyError(f"InputWidgetNotDefined: {name}")
        return self._values.get(name, self._defaults[name])

    def removeAll(self) -> None:
        self._defaults.clear()

    def unknown(self) -> set[str]:
        """Values passed for widgets the notebook never declared (a typo in a test or job)."""
        return set(self._values) - set(self._defaults)


@dataclass
class DBUtils:
    widgets: Widgets


@dataclass
class Shown:
    """What the notebook displayed: frames (as pandas) and HTML strings."""

    frames: list[Any] = field(default_factory=list)
    html: list[str] = field(default_factory=list)

    def display(self, obj: Any) -> None:
        self.frames.append(obj.toPandas() if hasattr(obj, "toPandas") else obj)

    def displayHTML(self, text: str) -> None:
        self.html.append(text)


def run_notebook(path: Path, spark: Any, widgets: Mapping[str, str]) -> tuple[dict[str, Any], Shown]:
    """Execute the notebook; return its globals and what it displayed."""
    text = Path(path).read_text()
    if not text.startswith("# Databricks notebook source\n"):
        raise ValueError(f"{path}: not a Databricks source-format notebook")
    dbutils = DBUtils(Widgets(widgets))
    shown = Shown()
    ns = runpy.run_path(
        str(path),
        init_globals={"spark": spark, "dbutils": dbutils, "display": shown.display, "displayHTML": shown.displayHTML},
        run_name="__main__",
    )
    if dbutils.widgets.unknown():
        raise KeyError(f"{path.name}: no widget named {sorted(dbutils.widgets.unknown())}")
    return ns, shown
