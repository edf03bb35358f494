"""Every setting declared once: conf/*.yaml and docs/config.md are generated from the
config classes' field descriptions and defaults (in the manner of pyspark.ml's
`Param(doc=…)` / `explainParams()`), so a comment, a CLI help line, a notebook widget
label and a docs row cannot say different things.

Owns: reading a field's description and default (`setting`), rendering a config class
as commented YAML (`render_yaml`) and as a Markdown table (`render_table`), and the
list of generated files (`CONF_FILES`). Must not: hold any wording of a setting (that
lives in `imgfeat.config`), only the per-file headers.

Regenerate after changing a field:  python -m imgfeat.settings_doc --write
Check without writing (what the tests do):  python -m imgfeat.settings_doc --check
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic.fields import FieldInfo

from imgfeat import config
from imgfeat.config import Section

REPO = Path(__file__).resolve().parents[1]
WIDTH = 88


@dataclass(frozen=True)
class Setting:
    """One key of a config class: what the CLI flag, widget, YAML comment and docs row show."""

    key: str  # dotted, e.g. featurizer.batch_size
    description: str
    default: Any  # JSON-able (tuples as lists); a section's is its dict
    field: FieldInfo
    section: type[Section] | None  # the section class when the key is a section

    @property
    def default_text(self) -> str:
        """The default as YAML writes it inline (`null`, `[-1]`, `[efficientnet_lite0]`)."""
        return inline_yaml(_compact(self.default, _item_section(self.field)))


def inline_yaml(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def _section_of(info: FieldInfo) -> type[Section] | None:
    kind = info.annotation
    return kind if isinstance(kind, type) and issubclass(kind, Section) else None


def _describe(info: FieldInfo) -> str:
    """A field's description; a section field without one has its class docstring's first line."""
    if info.description:
        return info.description
    section = _section_of(info)
    doc = (section.__doc__ or "") if section else ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def _defaults(cls: type[Section]) -> dict[str, Any]:
    """Defaults as the job sees them: an instance built with no config (validators applied)."""
    return cls().model_dump(mode="json")


def settings(cls: type[Section], prefix: str = "", defaults: Mapping[str, Any] | None = None) -> Iterator[Setting]:
    """Every key of `cls` in declaration order, a section followed by its keys."""
    defaults = _defaults(cls) if defaults is None else defaults
    for name, info in cls.model_fields.items():
        section = _section_of(info)
        yield Setting(prefix + name, _describe(info), defaults[name], info, section)
        if section is not None:
            yield from settings(section, f"{prefix}{name}.", defaults[name])


def setting(cls: type[Section], key: str) -> Setting:
    """The `Setting` of one dotted key of `cls` (KeyError names the key)."""
    for s in settings(cls):
        if s.key == key:
            return s
    raise KeyError(f"{cls.__name__} has no key {key!r}")


# ------------------------------------------------------------------ conf/*.yaml
@dataclass(frozen=True)
class ConfFile:
    """One generated conf/<name>.yaml: its class, its header and which keys of which sections it writes.

    `only` maps a section (dotted) to the keys written for it; its other keys are
    left out on purpose (nightly's steps take their table and input from
    featurize, so writing them would pin them; finetune ignores most featurizer keys).
    """

    name: str
    cls: type[Section]
    header: str
    only: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return REPO / "conf" / f"{self.name}.yaml"


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(text, WIDTH - len(indent) - 2, break_on_hyphens=False)]


def _compact(value: Any, section: type[Section] | None) -> Any:
    """A list of sections as written by hand: only non-default keys, a bare name if that is all."""
    if section is None or not isinstance(value, list):
        return value
    base = section().model_dump(mode="json")
    items = [{k: v for k, v in item.items() if k == "name" or base.get(k) != v} for item in value]
    return [item["name"] if set(item) == {"name"} else item for item in items]


def _item_section(info: FieldInfo) -> type[Section] | None:
    """The section class of a `tuple[SomeSection, ...]` field (TrainConfig.featurizers)."""
    args = getattr(info.annotation, "__args__", ())
    return args[0] if args and isinstance(args[0], type) and issubclass(args[0], Section) else None


def _yaml_lines(
    cls: type[Section], defaults: Mapping[str, Any], only: Mapping[str, Sequence[str]], prefix: str = ""
) -> list[str]:
    indent = "  " * prefix.count(".")
    lines: list[str] = []
    keep = only.get(prefix.rstrip("."))
    after_section = False
    for name, info in cls.model_fields.items():
        if keep is not None and name not in keep:
            continue
        section = _section_of(info)
        if section is not None or after_section:
            lines.append("")
        lines += _comment(_describe(info), indent)
        if section is not None:
            lines.append(f"{indent}{name}:")
            lines += _yaml_lines(section, defaults[name], only, f"{prefix}{name}.")
        else:
            lines.append(f"{indent}{name}: {inline_yaml(_compact(defaults[name], _item_section(info)))}")
        after_section = section is not None
    return lines


def render_yaml(cls: type[Section], header: str, only: Mapping[str, Sequence[str]] | None = None) -> str:
    """`cls` as a commented YAML file: the header, then every key (its description as the
    comment above it, its default as the value), sections nested in declaration order."""
    head = [f"# {line}".rstrip() for line in header.strip("\n").splitlines()]
    return "\n".join([*head, "", *_yaml_lines(cls, _defaults(cls), only or {})]).replace("\n\n\n", "\n\n") + "\n"


_GENERATED = (
    "Generated from imgfeat/config.py by `python -m imgfeat.settings_doc --write`: edit the descriptions there."
)

CONF_FILES: tuple[ConfFile, ...] = (
    ConfFile(
        "featurize",
        config.FeaturizeConfig,
        f"""\
imgfeat featurize — every key, with its default. Run with no config at all and
these defaults apply; CLI flags (--input, --table, --featurizer, --weights) and
--set key=value override the file.
  imgfeat featurize --config conf/featurize.yaml --input DIR [--set featurizer.batch_size=64]
{_GENERATED}""",
    ),
    ConfFile(
        "train",
        config.TrainConfig,
        f"""\
imgfeat train — every key, with its default. Run with no config at all and
these defaults apply; --table, --version, --featurizers and --set key=value override the file.
  imgfeat train --config conf/train.yaml [--table PATH] [--version N] [--set k=v]
A featurizer section takes the options the featurize run used (weights, pooling, layers, dim ...):
  featurizers: [efficientnet_lite0, {{name: resnet50, weights: /models/r50.pt, pooling: gem}}]
{_GENERATED}""",
    ),
    ConfFile(
        "finetune",
        config.FinetuneConfig,
        f"""\
imgfeat finetune — every key, with its default. Run with no config at all and
these defaults apply; --input, --model-name and --set key=value override the file.
  imgfeat finetune --config conf/finetune.yaml --input DIR [--set labels.source=labels.csv]

Fine-tunes a registry featurizer on your labels with a classification or
regression head, distributed with pyspark's TorchDistributor, and registers
the network (head dropped) as a featurizer: then
  imgfeat featurize --weights models:/imgfeat-finetuned/latest ...
  train.yaml: featurizers: [{{name: efficientnet_lite0, weights: 'models:/imgfeat-finetuned/latest'}}]
Only the train split is trained on: keep `labels` and `split` equal to train.yaml's.
{_GENERATED}""",
        only={"featurizer": ("name", "weights", "pooling", "gem_p", "layers")},
    ),
    ConfFile(
        "select",
        config.SelectConfig,
        f"""\
imgfeat select — every key, with its default. Run with no config at all and
these defaults apply; --input, --table, --candidates, --sample and --set key=value
override the file.
  imgfeat select --input DIR [--table PATH] [--set labels.source=labels.csv --set labels.label=y]

Featurizes a stratified labeled sample with every candidate INTO the embeddings
table (the normal featurize path: a later full `imgfeat featurize` with the winner
skips these rows), cross-validates XGBoost on each (as `imgfeat train` does, on the
non-test images of the sample only: the test split stays unseen), and prints
candidate, dim, cv metric mean ± std, featurize ms/img, then `recommend: NAME`.
Rule: the best cv mean (accuracy; R² for regression) sets the bar; of the candidates
within one std of it, the cheapest (ms/img; a pair costs the sum of its parts) wins.
{_GENERATED}""",
    ),
    ConfFile(
        "score",
        config.ScoreConfig,
        f"""\
imgfeat score — every key, with its default. CLI flags (--model, --input,
--output, --table) and --set key=value override the file.
  imgfeat score --model models:/imgfeat/latest --input DIR --output warehouse/scores
{_GENERATED}""",
    ),
    ConfFile(
        "serve",
        config.ServeConfig,
        f"""\
imgfeat serve — every key, with its default. CLI flags (--model, --host, --port,
--workers, --paths-root) and --set key=value override the file.
  imgfeat serve --model models:/imgfeat/latest --port 5000
{_GENERATED}""",
    ),
    ConfFile(
        "insights",
        config.InsightsConfig,
        f"""\
imgfeat insights — every key, with its default. CLI flags (--model, --table,
--output, --sample, --projection) and --set key=value override the file.
  imgfeat insights --model models:/imgfeat/3 --output insights
{_GENERATED}""",
    ),
    ConfFile(
        "nightly",
        config.NightlyConfig,
        f"""\
imgfeat nightly — featurize what is new, retrain past a threshold, score.
  imgfeat nightly --config conf/nightly.yaml [--input URI] [--table PATH] [--step featurize|train|score] [--set k=v]
Exit codes: 0 done (also "nothing new"), 2 user error, 3 another run holds
the table's lock (retry later), 1 a bug.

The three step sections take exactly the keys of their own job's config:
conf/featurize.yaml, conf/train.yaml, conf/score.yaml (every key documented
there). Only what differs from those defaults is needed here.
{_GENERATED}""",
        only={
            "featurize": ("input", "table", "featurizer"),
            "featurize.featurizer": ("name",),
            "train": ("featurizers", "labels", "model_name", "alias"),
            "train.labels": ("label",),
            "score": ("output",),
        },
    ),
)


# ------------------------------------------------------------------ docs/config.md
DOCS = REPO / "docs" / "config.md"


def _cell(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace("|", "\\|").replace("\n", " ")


def render_table(cls: type[Section]) -> str:
    """One Markdown table: key, default, description; a nested job (nightly's steps) is one row."""
    jobs = {c.cls: c.name for c in CONF_FILES}
    rows = ["| key | default | description |", "|---|---|---|"]
    skip: tuple[str, ...] = ()
    for s in settings(cls):
        if skip and s.key.startswith(skip):
            continue
        if s.section in jobs:
            rows.append(
                f"| `{s.key}` | | {_cell(s.description.rstrip('.'))}: see [{jobs[s.section]}](#{jobs[s.section]}). |"
            )
            skip = (*skip, s.key + ".")
        elif s.section is not None:
            rows.append(f"| **`{s.key}`** | | {_cell(s.description)} |")
        else:
            rows.append(f"| `{s.key}` | `{_cell(s.default_text)}` | {_cell(s.description)} |")
    return "\n".join(rows)


def render_docs() -> str:
    """docs/config.md: one table per job, in the order of conf/."""
    parts = [
        "# Configuration reference",
        "",
        f"<!-- {_GENERATED} -->",
        "",
        (
            "Every key of every job's config, with its default. The same descriptions are the comments of "
            "`conf/*.yaml`, the CLI's `--help` and the notebooks' widget labels. Set a key in a YAML file "
            "(`--config FILE`) or with `--set key=value`; nested keys are dotted (`featurizer.batch_size`)."
        ),
    ]
    for conf in CONF_FILES:
        doc = " ".join((conf.cls.__doc__ or "").strip().split("\n\n")[0].split())
        parts += [
            "",
            f"## {conf.name}",
            "",
            f"{doc} Example file: `conf/{conf.name}.yaml`.",
            "",
            render_table(conf.cls),
        ]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------ write / check
def generated() -> dict[Path, str]:
    """Every generated file and the text it must hold."""
    out = {c.path: render_yaml(c.cls, c.header, c.only) for c in CONF_FILES}
    out[DOCS] = render_docs()
    return out


def stale() -> list[Path]:
    """Generated files whose committed text differs from what the generator writes."""
    return [p for p, text in generated().items() if not p.is_file() or p.read_text() != text]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imgfeat.settings_doc", description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="rewrite conf/*.yaml and docs/config.md")
    group.add_argument("--check", action="store_true", help="exit 1 if any of them is out of date")
    args = parser.parse_args(argv)
    if args.check:
        out = [str(p.relative_to(REPO)) for p in stale()]
        print(json.dumps({"stale": out}) if out else "up to date")
        return 1 if out else 0
    for path, text in generated().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
