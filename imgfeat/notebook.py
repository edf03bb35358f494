"""Databricks notebook widgets declared from the config fields, and a config read back from them.

Why: a notebook used to retype each setting's label, default and choices, and map
each widget to its config key by hand. Here a widget is a config key: its label is
the field's description, its default the field's default (or the notebook's own,
e.g. a Unity Catalog volume path), its choices the field's `Literal` values, and
`config_from_widgets` turns the values back into the same typed config the CLI
builds (`load_config`: optional YAML file, then the widgets as `--set` overrides).

Owns: nothing but that mapping. Must not: import Spark, torch or a job (the
notebook imports `imgfeat.runs` itself).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, get_args, get_origin

from imgfeat.config import Section, load_config
from imgfeat.settings_doc import Setting, setting

C = TypeVar("C", bound=Section)

#: Widget name → dotted config key; a plain key is named by it with dots as underscores
#: (`tracking.uri` → `tracking_uri`).
Keys = Mapping[str, str] | Sequence[str]

#: The optional YAML config widget every config-driven notebook has.
CONFIG_WIDGET = "config"


def _named(keys: Keys) -> dict[str, str]:
    return dict(keys) if isinstance(keys, Mapping) else {key.replace(".", "_"): key for key in keys}


def _choices(s: Setting) -> list[str] | None:
    if get_origin(s.field.annotation) is Literal:
        return [str(v) for v in get_args(s.field.annotation)]
    return ["true", "false"] if s.field.annotation is bool else None


def _text(s: Setting) -> str:
    """A default as a widget shows it: empty for null, a list as `a,b`."""
    if s.default is None:
        return ""
    if isinstance(s.default, str):
        return s.default
    text = s.default_text
    return text[1:-1].replace(", ", ",") if text.startswith("[") else text


def widgets(
    dbutils: Any, cls: type[Section], keys: Keys, defaults: Mapping[str, str] | None = None, config: bool = True
) -> None:
    """Declare one widget per config key of `cls` (text, or a dropdown for a Literal or bool field).

    `defaults` (by widget name) replaces a field's default where the notebook has a
    better one; `config` adds the optional YAML config widget.
    """
    defaults = defaults or {}
    for name, key in _named(keys).items():
        s = setting(cls, key)
        default, choices = defaults.get(name, _text(s)), _choices(s)
        if choices:
            dbutils.widgets.dropdown(name, default, choices, s.description)
        else:
            dbutils.widgets.text(name, default, s.description)
    if config:
        dbutils.widgets.text(
            CONFIG_WIDGET, "", "Optional YAML config file (any key of the job's conf file; widgets win)."
        )


def config_from_widgets(dbutils: Any, cls: type[C], keys: Keys, config: bool = True) -> C:
    """The `cls` the widgets describe: the optional YAML file, then each widget as `--set key=value`.

    An empty widget leaves the file's value or the default, except where the field's
    default is a value and it also takes null (score's `table`): there empty means null.
    """
    get = dbutils.widgets.get
    overrides = []
    for name, key in _named(keys).items():
        s, value = setting(cls, key), get(name).strip()
        if not value:
            if s.default is not None and type(None) in get_args(s.field.annotation):
                overrides.append(f"{key}=null")
            continue
        if isinstance(s.default, list) and not value.startswith("["):
            value = f"[{value}]"  # a,b → [a,b]
        overrides.append(f"{key}={value}")
    return load_config(cls, (get(CONFIG_WIDGET) or None) if config else None, overrides)
