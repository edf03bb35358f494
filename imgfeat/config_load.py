"""Loading a typed config: YAML file, then `--set key=value` overrides, then flags.

Owns: reading YAML safely (`yaml.safe_load`), applying dotted overrides, and
turning the first bad key or value into one readable `ConfigError` that names the
key and the file (with a "did you mean" for a misspelled key). Knows no job's
schema: it works on any pydantic model (`imgfeat.config` holds the schemas and
re-exports `load_config` and `dump_config`).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from imgfeat.errors import ConfigError

C = TypeVar("C", bound=BaseModel)


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    **fields: Any,
) -> C:
    """Build a `cls` from an optional YAML file, then `--set key=value` overrides,
    then explicit non-None `fields` (CLI flags win over the file)."""
    source = str(path) if path else "<defaults>"
    data: dict[str, Any] = {}
    if path:
        data = _read_yaml(Path(path))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. featurizer.batch_size=64")
        value = yaml.safe_load(raw) if raw else None
        if value is not None and not isinstance(value, str) and _is_text(cls, key.strip()):
            value = raw  # a name or hash YAML would read as a number (2024, 000…) stays as typed
        _assign(data, key.strip(), value)
    if overrides:
        source = f"{source} + --set"
    for key, value in fields.items():
        if value is not None:
            _assign(data, key, value)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, cls, source)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return loaded


def _assign(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {part!r} is not a section")
    node[leaf] = value


def _describe(exc: ValidationError, cls: type[BaseModel], source: str) -> str:
    """The first error, as `file: key: what is wrong (did you mean ...)`."""
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        valid = _fields_at(cls, err["loc"][:-1])
        close = difflib.get_close_matches(str(err["loc"][-1]), valid, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else f" (valid: {', '.join(valid)})"
        return f"{source}: unknown key {key!r}{hint}"
    if err["type"] == "string_type" and isinstance(err.get("input"), (int, float)):
        return f"{source}: {key}: YAML read {err['input']!r} as a number; quote it to keep it as text"
    if err["type"] == "value_error":  # a validator's own message names the keys
        return f"{source}: {key + ': ' if key else ''}{err['msg'].removeprefix('Value error, ')}"
    return f"{source}: {key}: {err['msg']} (got {err.get('input')!r})"


def _model_at(cls: type[BaseModel], loc: Sequence[Any]) -> Any:
    """The section model at `loc` (a path of field names), or None."""
    model: Any = cls
    for part in loc:
        field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
        if field is None or not isinstance(field.annotation, type):
            return None
        model = field.annotation
    return model if hasattr(model, "model_fields") else None


def _fields_at(cls: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    model = _model_at(cls, loc)
    return list(model.model_fields) if model is not None else []


def _is_text(cls: type[BaseModel], dotted: str) -> bool:
    """Whether `dotted` names a `str` (or optional `str`) field of `cls`."""
    *loc, leaf = dotted.split(".")
    model = _model_at(cls, loc)
    field = model.model_fields.get(leaf) if model is not None else None
    return field is not None and field.annotation in (str, str | None)


def dump_config(cfg: BaseModel) -> dict[str, Any]:
    """Plain JSON-able dict of a config (for tracking and run metadata)."""
    return cfg.model_dump(mode="json")
