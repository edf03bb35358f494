"""`imgfeat` command line: parse arguments, load config, call `imgfeat.runs`.

Owns: flags, the user-facing help, exit codes and what is printed (through
`imgfeat.console`: imgfeat's lines on the terminal, library logs in a file). Must not: hold job logic (the
same functions run from `jobs/*.py` under spark-submit and from notebooks).

Exit codes: 0 the run committed (even if some images were bad); 2 a user
error (bad config, bad input, unknown featurizer), shown as one line; 3 busy:
another run holds the table's lock or committed first, nothing was written,
retry later; 1 an unexpected failure (stack trace).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from imgfeat import console
from imgfeat.errors import ImgfeatError

Command = Callable[[argparse.Namespace], int]


def _featurize(args: argparse.Namespace) -> int:
    from imgfeat.config import FeaturizeConfig, load_config

    cfg = load_config(FeaturizeConfig, args.config, args.set, **config_flags(args))
    from imgfeat.runs import featurize_run  # torch, Spark: only once the config is good

    summary = featurize_run(cfg)
    print(summary.line(), flush=True)
    _write_summary(args.summary_json, summary.as_dict())
    return 0


def _train(args: argparse.Namespace) -> int:
    from imgfeat.config import TrainConfig, load_config
    from imgfeat.runs import train_run

    cfg = load_config(TrainConfig, args.config, args.set, **config_flags(args))
    print("\n".join(train_run(cfg).lines()), flush=True)
    return 0


def _select(args: argparse.Namespace) -> int:
    from imgfeat.config import SelectConfig, load_config

    cfg = load_config(SelectConfig, args.config, args.set, **config_flags(args))
    from imgfeat.runs import select_run  # torch, Spark: only once the config is good

    print("\n".join(select_run(cfg).lines()), flush=True)
    return 0


def _score(args: argparse.Namespace) -> int:
    from imgfeat.config import ScoreConfig, load_config

    cfg = load_config(ScoreConfig, args.config, args.set, **config_flags(args))
    from imgfeat.runs import score_run  # torch, Spark: only once the config is good

    print(score_run(cfg).line(), flush=True)
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from imgfeat.config import FinetuneConfig, load_config

    cfg = load_config(FinetuneConfig, args.config, args.set, **config_flags(args))
    from imgfeat.runs import finetune_run  # torch, Spark: only once the config is good

    summary = finetune_run(cfg)
    print("\n".join(summary.lines()), flush=True)
    _write_summary(args.summary_json, summary.as_dict())
    return 0


def _insights(args: argparse.Namespace) -> int:
    from imgfeat.config import InsightsConfig, load_config

    cfg = load_config(InsightsConfig, args.config, args.set, **config_flags(args))
    from imgfeat.runs import insights_run  # torch, Spark: only once the config is good

    print(insights_run(cfg).line(), flush=True)
    return 0


def _write_summary(path: str | None, summary: dict) -> None:
    """`--summary-json PATH`: the run's summary for schedulers and tests (the driver's disk)."""
    if path:
        import json

        with open(path, "w") as f:
            json.dump(summary, f, indent=1, default=str)


def nightly_config(args: argparse.Namespace):  # -> NightlyConfig
    """The config `imgfeat nightly ARGS` runs with (also checks the bundle's task parameters)."""
    from imgfeat.config import NightlyConfig, load_config

    return load_config(NightlyConfig, args.config, args.set, **config_flags(args))


def _nightly(args: argparse.Namespace) -> int:
    from imgfeat.runs import NIGHTLY_STEPS, nightly_run

    summary = nightly_run(nightly_config(args), args.step or NIGHTLY_STEPS)
    print("\n".join(summary.lines()), flush=True)
    _write_summary(args.summary_json, summary.as_dict())
    return 0


def _featurizers(args: argparse.Namespace) -> int:
    from imgfeat.featurizers import list_featurizers

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    print(f"{'name':24} {'arch':22} {'dim':>5} {'input':>5}  {'mean / std':46} {'default weights':40} offline online")
    for r in list_featurizers():
        norm = f"{tuple(round(m, 3) for m in r.mean)} / {tuple(round(s, 3) for s in r.std)}"
        print(
            f"{r.name:24} {r.arch:22} {r.dim:>5} {r.input_size:>5}  {norm:46} "
            f"{r.default_weights:40} {yes(r.offline):7} {yes(r.online)}"
        )
    return 0


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    try:
        from imgfeat.dev.bench import BenchOptions, run_bench
    except ModuleNotFoundError as exc:
        if exc.name not in ("imgfeat.dev", "imgfeat.dev.bench"):
            raise  # a dependency of the harness is missing: that is not "installed from a wheel"
        print("imgfeat bench is a development command: run it from a clone (`make bench`)", file=sys.stderr)
        return 2

    skip = tuple(s for item in args.skip for s in item.split(",") if s)
    run_bench(
        BenchOptions(
            n=args.n,
            seed=args.seed,
            out=Path(args.out),
            master=args.master,
            overrides=tuple(args.set),
            compile=args.compile,
            skip=skip,
        ),
        emit=lambda line: print(line, flush=True),
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from imgfeat.config import ServeConfig, load_config

    cfg = load_config(ServeConfig, args.config, args.set, **config_flags(args))
    from imgfeat.runs import serve_run

    def ready(url: str, model: str, seconds: float) -> None:
        print(f"serve: {model} answers at {url}/invocations (ready in {seconds:.0f} s; Ctrl-C stops it)", flush=True)

    return serve_run(cfg, ready, console.child_output)


def _reregister(args: argparse.Namespace) -> int:
    from imgfeat.config import ServeConfig, load_config

    cfg = load_config(ServeConfig, args.config, args.set, **config_flags(args))
    from imgfeat.runs import reregister_run

    for line in reregister_run(cfg).lines():
        print(line, flush=True)
    return 0


def _rehash(args: argparse.Namespace) -> int:
    from imgfeat.config import FeaturizeConfig, load_config

    cfg = load_config(FeaturizeConfig, args.config, args.set, **config_flags(args))
    from imgfeat.runs import rehash_run

    print(rehash_run(cfg).line(), flush=True)
    return 0


# ------------------------------------------------------------------ the parser
DESCRIPTION = (
    "imgfeat turns folders of images into embeddings with pretrained CNNs on Spark (a Delta table), "
    "trains XGBoost models on them, and scores and serves those models with MLflow."
)
EXAMPLE = """example:
  imgfeat featurize --input photos/ --table warehouse/embeddings    # photos/<label>/*.jpg
  imgfeat train --table warehouse/embeddings                        # labels = folder names
  imgfeat score --model models:/imgfeat/latest --input new_photos/ --output warehouse/scores

`imgfeat COMMAND --help` lists a command's flags; conf/COMMAND.yaml documents every config key."""


@dataclass(frozen=True)
class Subcommand:
    """One `imgfeat NAME`: its one-line summary, its config file, its own flags and what it runs."""

    name: str
    summary: str
    run: Command
    flags: Callable[[argparse.ArgumentParser], None] = lambda p: None
    config: str | None = None  # conf/<name>.yaml: --config and --set apply
    example: str | None = None  # shown under the command's --help


#: argparse `dest` prefix of a flag that sets a config key: `config_flags` collects them.
_KEY = "config:"


def flag(
    parser: argparse.ArgumentParser,
    name: str,
    cls: type,
    key: str,
    *,
    metavar: str | None = None,
    parse: Callable[[str], Any] | None = None,
) -> None:
    """`name` sets config key `key` of `cls`; its help is the field's description and default.

    Why: a setting is declared once, in `imgfeat.config` (as pyspark.ml's `Param(doc=...)`),
    so the flag, the conf/*.yaml comment, the docs row and the notebook widget cannot
    disagree. The flag's own default stays None: an unset flag leaves the file's value.
    """
    from imgfeat.settings_doc import setting

    s = setting(cls, key)
    kinds = [a for a in get_args(s.field.annotation) if a is not type(None)] or [s.field.annotation]
    literal = get_origin(s.field.annotation) is Literal
    convert = parse or next((k for k in (int, float) if k in kinds), str)
    shown = "" if s.default is None else f" (default {s.default_text})"
    parser.add_argument(
        name,
        dest=_KEY + key,
        metavar=None if literal else metavar or key.rsplit(".", 1)[-1].upper(),
        type=convert,
        choices=get_args(s.field.annotation) if literal else None,
        help=(s.description + shown).replace("%", "%%"),
    )


def config_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys the command line's flags set: {dotted key: value} for `load_config`."""
    return {k.removeprefix(_KEY): v for k, v in vars(args).items() if k.startswith(_KEY) and v is not None}


def _names(text: str) -> list[str]:
    """`a,b` → [a, b]: a list-valued key given as one flag."""
    return [name.strip() for name in text.split(",") if name.strip()]


@dataclass(frozen=True)
class Key:
    """A flag that sets a config key: `flag(parser, name, <config class>, key, metavar=, parse=)`."""

    name: str
    key: str
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None


def config_keys(
    config: str,
    *keys: Key,
    summary_json: str | None = None,
    also: Callable[[argparse.ArgumentParser], None] = lambda p: None,
) -> Callable[[argparse.ArgumentParser], None]:
    """A command's flags: `flag` for each of `keys` (keys of `imgfeat.config.<config>`), then
    `also`'s own flags, then `--summary-json` where the command writes what `summary_json` says.

    Why: commands differ only in which keys they expose, so each is a row of data and one
    loop makes the flags. `config` is a name: pydantic loads once a parser is built, not on import.
    """

    def add(p: argparse.ArgumentParser) -> None:
        import imgfeat.config

        cls = getattr(imgfeat.config, config)
        for k in keys:
            flag(p, k.name, cls, k.key, metavar=k.metavar, parse=k.parse)
        also(p)
        if summary_json:
            p.add_argument("--summary-json", metavar="PATH", help=f"also write {summary_json} as JSON")

    return add


_INPUT = Key("--input", "input", "URI")
_TABLE = Key("--table", "table", "PATH")
_MODEL = Key("--model", "model", "URI")
_SAMPLE = Key("--sample", "sample", "N")

_featurize_flags = config_keys(
    "FeaturizeConfig",
    _INPUT,
    _TABLE,
    Key("--featurizer", "featurizer.name", "NAME"),
    Key("--weights", "featurizer.weights", "WEIGHTS"),
    summary_json="the run summary (counts, version, model loads)",
)
_train_flags = config_keys(
    "TrainConfig", _TABLE, Key("--version", "version", "N"), Key("--featurizers", "featurizers", "NAMES", _names)
)
_select_flags = config_keys("SelectConfig", _INPUT, _TABLE, Key("--candidates", "candidates", "NAMES"), _SAMPLE)
_finetune_flags = config_keys(
    "FinetuneConfig",
    _INPUT,
    Key("--model-name", "model_name", "NAME"),
    summary_json="the run summary (counts, epochs, weights)",
)
_score_flags = config_keys("ScoreConfig", _MODEL, _INPUT, Key("--output", "output", "PATH"), _TABLE)
_serve_flags = config_keys(
    "ServeConfig",
    _MODEL,
    Key("--host", "host", "HOST"),
    Key("--port", "port", "PORT"),
    Key("--workers", "workers", "N"),
    Key("--paths-root", "paths.root", "DIR"),
)
_reregister_flags = config_keys("ServeConfig", _MODEL)
_rehash_flags = config_keys("FeaturizeConfig", _TABLE)
_insights_flags = config_keys(
    "InsightsConfig", _MODEL, _TABLE, Key("--output", "output", "DIR"), _SAMPLE, Key("--projection", "projection")
)


def _step_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--step",
        action="append",
        choices=["featurize", "train", "score"],
        help="run only this step (repeatable; default all three, in order)",
    )


_nightly_flags = config_keys(
    "NightlyConfig",
    Key("--input", "featurize.input", "URI"),
    Key("--table", "featurize.table", "PATH"),
    also=_step_flag,
    summary_json="what each step did",
)


def _bench_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=2000, help="benchmark photos (default 2000; cached in --out)")
    p.add_argument("--seed", type=int, default=0, help="photo generator seed")
    p.add_argument("--out", default="bench/out", help="cache and scratch folder (default bench/out)")
    p.add_argument("--master", help="Spark master (default local[<cores>])")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="featurize config override for the Spark job"
    )
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="STAGES",
        help="comma-separated: decode, model, loop, spark, naive, udf",
    )


#: In the order a user runs them; `imgfeat --help` lists them so. A new command is
#: a `_<name>` run function, a `_<name>_flags` function (`flag` per config key), a ConfFile in
#: `imgfeat.settings_doc` (which writes conf/<name>.yaml) and one line here.
SUBCOMMANDS = (
    Subcommand(
        "featurize",
        "images → embeddings Delta table (only new or changed images)",
        _featurize,
        _featurize_flags,
        "conf/featurize.yaml",
        "example:\n  imgfeat featurize --input s3://bucket/photos --table warehouse/embeddings --featurizer resnet50",
    ),
    Subcommand(
        "rehash",
        "fill the perceptual hash (near-copy key) of rows featurized before the table stored it",
        _rehash,
        _rehash_flags,
        "conf/featurize.yaml",
        "example:\n  imgfeat rehash --table warehouse/embeddings      # one new table version; reruns add nothing",
    ),
    Subcommand(
        "train",
        "embeddings (+ labels, tabular columns) → XGBoost on Spark → registered MLflow model",
        _train,
        _train_flags,
        "conf/train.yaml",
        "example:\n  imgfeat train --table warehouse/embeddings --set labels.source=labels.csv --set labels.label=kind",
    ),
    Subcommand(
        "finetune",
        "labeled images → fine-tuned featurizer (TorchDistributor), registered in MLflow",
        _finetune,
        _finetune_flags,
        "conf/finetune.yaml",
        "example:\n  imgfeat finetune --input photos/ --set labels.source=labels.csv --set labels.label=defect\n"
        "  imgfeat featurize --input photos/ --weights models:/imgfeat-finetuned/latest",
    ),
    Subcommand(
        "select",
        "try candidate featurizers on a labeled sample (into the table), recommend one",
        _select,
        _select_flags,
        "conf/select.yaml",
        "example:\n  imgfeat select --input photos/ --set labels.source=labels.csv --set labels.label=defect",
    ),
    Subcommand(
        "score",
        "images → registered model → scores Delta table (reuses stored embeddings)",
        _score,
        _score_flags,
        "conf/score.yaml",
        "example:\n  imgfeat score --model models:/imgfeat/latest --input new_photos/ --output warehouse/scores",
    ),
    Subcommand(
        "serve",
        "a registered model behind a REST endpoint (MLflow's scoring server)",
        _serve,
        _serve_flags,
        "conf/serve.yaml",
        "example:\n  imgfeat serve --model models:/imgfeat/latest --port 5000\n"
        "  curl -s localhost:5000/invocations -H 'Content-Type: application/json' \\\n"
        '    -d \'{"dataframe_split": {"columns": ["content"], "data": [["\'$(base64 -w0 cat.jpg)\'"]]}}\'',
    ),
    Subcommand(
        "reregister",
        "log a registered version again with this imgfeat's code (today's serving rules)",
        _reregister,
        _reregister_flags,
        "conf/serve.yaml",
        "example:\n  imgfeat reregister --model models:/imgfeat/3      # prints the new version to serve",
    ),
    Subcommand(
        "insights",
        "registered model → one HTML report: projection, activation maps, outliers, near-duplicates, errors",
        _insights,
        _insights_flags,
        "conf/insights.yaml",
        "example:\n  imgfeat insights --model models:/imgfeat/3 --output insights",
    ),
    Subcommand(
        "nightly",
        "featurize new images, retrain past a threshold, score; under the table's lock",
        _nightly,
        _nightly_flags,
        "conf/nightly.yaml",
        "example:\n  imgfeat nightly --config conf/nightly.yaml --input s3://bucket/photos --table s3://lake/embeddings",
    ),
    Subcommand("featurizers", "list the registered featurizers (names for --featurizer)", _featurizers),
    Subcommand("bench", "time the Spark job against a hand loop and other baselines", _bench, _bench_flags),
)


def _common_flags(p: argparse.ArgumentParser, defaults: bool) -> None:
    """Flags every command takes, before or after its name (`imgfeat --verbose score` = `imgfeat score --verbose`).

    Only the top level sets their defaults: a sub-command's would overwrite a
    value given before its name.
    """
    d = (lambda value: value) if defaults else (lambda value: argparse.SUPPRESS)
    group = p.add_argument_group("output")
    group.add_argument(
        "--verbose",
        action="store_true",
        default=d(False),
        help="show Spark, MLflow and XGBoost logs here instead of in a log file",
    )
    group.add_argument(
        "--log-file",
        metavar="PATH",
        default=d(None),
        help="where those logs go (default: a new file under $TMPDIR/imgfeat-logs/)",
    )
    group.add_argument("--debug", action="store_true", default=d(False), help="show stack traces for user errors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgfeat",
        description=DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_flags(parser, defaults=True)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title="commands, in the order you run them"
    )
    for command in SUBCOMMANDS:
        where = (
            f"\n\nEvery key, with its default, is documented in {command.config}; "
            "--config FILE reads yours, and flags and --set override it."
            if command.config
            else ""
        )
        p = sub.add_parser(
            command.name,
            help=command.summary,
            description=command.summary + where,
            epilog=command.example,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.flags(p)
        if command.config:
            p.add_argument(
                "--config", metavar="FILE", help=f"YAML config (default: built-in defaults, as in {command.config})"
            )
            p.add_argument(
                "--set",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="override one config key, e.g. --set tracking.uri=sqlite:///mlflow.db (repeatable)",
            )
        _common_flags(p, defaults=False)
        p.set_defaults(run=command.run)
    return parser


def _executor_lacks(exc: Exception) -> ImgfeatError | None:
    """A Spark job that failed on an executor's missing module, as a user error (`imgfeat.session`);
    looked for only once a Spark job could have run (pyspark imported)."""
    if "pyspark" not in sys.modules:
        return None
    from imgfeat.session import executor_error

    return executor_error(exc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose or console.under_spark_submit():
        console.verbose()
    else:
        console.quiet(Path(args.log_file) if args.log_file else console.default_log_path(args.command))
    try:
        return args.run(args)
    except ImgfeatError as exc:
        if args.debug:
            raise
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"imgfeat: error: {message}", file=sys.stderr)  # one line, whatever the cause wrote
        return exc.exit_code
    except KeyboardInterrupt:
        print("imgfeat: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        lacking = _executor_lacks(exc)
        if lacking is not None and not args.debug:
            print(f"imgfeat: error: {lacking}", file=sys.stderr)  # not a worker's 80-line traceback
            return lacking.exit_code
        where = console.log_path()
        if where is not None and where.exists():
            print(f"imgfeat: Spark, MLflow and XGBoost logs of this run: {where}", file=sys.stderr)
        raise


if __name__ == "__main__":
    sys.exit(main())
