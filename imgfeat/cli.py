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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from imgfeat import console
from imgfeat.errors import ImgfeatError

Command = Callable[[argparse.Namespace], int]


def _featurize(args: argparse.Namespace) -> int:
    from imgfeat.config import FeaturizeConfig, load_config

    cfg = load_config(
        FeaturizeConfig,
        args.config,
        args.set,
        input=args.input,
        table=args.table,
        **{"featurizer.name": args.featurizer, "featurizer.weights": args.weights},
    )
    from imgfeat.runs import featurize_run  # torch, Spark: only once the config is good

    summary = featurize_run(cfg)
    print(summary.line(), flush=True)
    _write_summary(args.summary_json, summary.as_dict())
    return 0


def _train(args: argparse.Namespace) -> int:
    from imgfeat.config import TrainConfig, load_config
    from imgfeat.runs import train_run

    featurizers = args.featurizers.split(",") if args.featurizers else None
    cfg = load_config(TrainConfig, args.config, args.set, table=args.table, version=args.version, featurizers=featurizers)
    print("\n".join(train_run(cfg).lines()), flush=True)
    return 0


def _select(args: argparse.Namespace) -> int:
    from imgfeat.config import SelectConfig, load_config

    cfg = load_config(
        SelectConfig, args.config, args.set, input=args.input, table=args.table,
        candidates=args.candidates, sample=args.sample,
    )
    from imgfeat.runs import select_run  # torch, Spark: only once the config is good

    print("\n".join(select_run(cfg).lines()), flush=True)
    return 0


def _score(args: argparse.Namespace) -> int:
    from imgfeat.config import ScoreConfig, load_config

    cfg = load_config(
        ScoreConfig, args.config, args.set, model=args.model, input=args.input, output=args.output, table=args.table
    )
    from imgfeat.runs import score_run  # torch, Spark: only once the config is good

    print(score_run(cfg).line(), flush=True)
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from imgfeat.config import FinetuneConfig, load_config

    cfg = load_config(FinetuneConfig, args.config, args.set, input=args.input, model_name=args.model_name)
    from imgfeat.runs import finetune_run  # torch, Spark: only once the config is good

    summary = finetune_run(cfg)
    print("\n".join(summary.lines()), flush=True)
    _write_summary(args.summary_json, summary.as_dict())
    return 0


def _insights(args: argparse.Namespace) -> int:
    from imgfeat.config import InsightsConfig, load_config

    cfg = load_config(
        InsightsConfig, args.config, args.set, model=args.model, table=args.table, output=args.output,
        sample=args.sample, projection=args.projection,
    )
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

    return load_config(
        NightlyConfig, args.config, args.set, **{"featurize.input": args.input, "featurize.table": args.table}
    )


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

    from imgfeat.bench import BenchOptions, run_bench

    skip = tuple(s for item in args.skip for s in item.split(",") if s)
    run_bench(
        BenchOptions(
            n=args.n, seed=args.seed, out=Path(args.out), master=args.master,
            overrides=tuple(args.set), compile=args.compile, skip=skip,
        ),
        emit=lambda line: print(line, flush=True),
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from imgfeat.config import ServeConfig, load_config

    cfg = load_config(
        ServeConfig, args.config, args.set, model=args.model, host=args.host, port=args.port, workers=args.workers
    )
    from imgfeat.runs import serve_run

    def ready(url: str, model: str, seconds: float) -> None:
        print(f"serve: {model} answers at {url}/invocations (ready in {seconds:.0f} s; Ctrl-C stops it)", flush=True)

    return serve_run(cfg, ready, console.child_output)


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


_INPUT_HELP = "directory, glob or URI of images (recursive)"
_MODEL_HELP = "models:/NAME/VERSION, models:/NAME/latest or models:/NAME@alias"


def _featurize_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", metavar="URI", help=_INPUT_HELP)
    p.add_argument("--table", metavar="PATH", help="Delta table path (default warehouse/embeddings)")
    p.add_argument("--featurizer", metavar="NAME", help="registry name, e.g. efficientnet_lite0, resnet50 (see `imgfeat featurizers`)")
    p.add_argument("--weights", metavar="WEIGHTS", help="default | hub | random | checkpoint path/URI | models:/NAME/latest | runs:/ID/path")
    p.add_argument("--summary-json", metavar="PATH", help="also write the run summary (counts, version, model loads) as JSON")


def _train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--table", metavar="PATH", help="embeddings Delta table (default warehouse/embeddings)")
    p.add_argument("--version", type=int, metavar="N", help="table version to train on (default: latest)")
    p.add_argument(
        "--featurizers", metavar="NAMES",
        help="comma-separated featurizers to concatenate, or `auto`: the latest `imgfeat select` choice for the table",
    )


def _select_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", metavar="URI", help=_INPUT_HELP)
    p.add_argument("--table", metavar="PATH", help="embeddings Delta table the sample is featurized into (default warehouse/embeddings)")
    p.add_argument("--candidates", metavar="NAMES", help="comma-separated featurizers (default: all with offline weights)")
    p.add_argument("--sample", type=int, metavar="N", help="labeled images to try them on (default 1000, stratified)")


def _finetune_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", metavar="URI", help="directory, glob or URI of the labeled images (recursive)")
    p.add_argument("--model-name", metavar="NAME", help="registered name of the fine-tuned featurizer (default imgfeat-finetuned)")
    p.add_argument("--summary-json", metavar="PATH", help="also write the run summary (counts, epochs, weights) as JSON")


def _score_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="URI", help=_MODEL_HELP)
    p.add_argument("--input", metavar="URI", help=_INPUT_HELP)
    p.add_argument("--output", metavar="PATH", help="scores Delta table (default warehouse/scores)")
    p.add_argument("--table", metavar="PATH", help="embeddings table to reuse rows from (default warehouse/embeddings)")


def _serve_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="URI", help=_MODEL_HELP)
    p.add_argument("--host", help="interface to listen on (default 127.0.0.1; 0.0.0.0 = every interface)")
    p.add_argument("--port", type=int, help="TCP port (default 5000)")
    p.add_argument("--workers", type=int, metavar="N", help="server processes, each with the model loaded (default 1)")


def _insights_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="URI", help=_MODEL_HELP)
    p.add_argument("--table", metavar="PATH", help="embeddings table (default: the one the model was trained on)")
    p.add_argument("--output", metavar="DIR", help="folder for report.html (default insights)")
    p.add_argument("--sample", type=int, metavar="N", help="images projected (default 2000, or all if fewer)")
    p.add_argument("--projection", choices=["umap", "trimap", "pca"], help="2-D projection (default umap)")


def _nightly_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", metavar="URI", help="images to featurize (featurize.input; score.input defaults to it)")
    p.add_argument("--table", metavar="PATH", help="embeddings table (featurize.table, shared by train and score)")
    p.add_argument(
        "--step", action="append", choices=["featurize", "train", "score"],
        help="run only this step (repeatable; default all three, in order)",
    )
    p.add_argument("--summary-json", metavar="PATH", help="also write what each step did as JSON")


def _bench_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=2000, help="benchmark photos (default 2000; cached in --out)")
    p.add_argument("--seed", type=int, default=0, help="photo generator seed")
    p.add_argument("--out", default="bench/out", help="cache and scratch folder (default bench/out)")
    p.add_argument("--master", help="Spark master (default local[<cores>])")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="featurize config override for the Spark job")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    p.add_argument("--skip", action="append", default=[], metavar="STAGES",
                   help="comma-separated: decode, model, loop, spark, naive, udf")


#: In the order a user runs them; `imgfeat --help` lists them so. A new command is
#: a `_<name>` run function, a `_<name>_flags` function, a conf/<name>.yaml and one line here.
SUBCOMMANDS = (
    Subcommand(
        "featurize", "images → embeddings Delta table (only new or changed images)", _featurize, _featurize_flags,
        "conf/featurize.yaml",
        "example:\n  imgfeat featurize --input s3://bucket/photos --table warehouse/embeddings --featurizer resnet50",
    ),
    Subcommand(
        "train", "embeddings (+ labels, tabular columns) → XGBoost on Spark → registered MLflow model", _train,
        _train_flags, "conf/train.yaml",
        "example:\n  imgfeat train --table warehouse/embeddings --set labels.source=labels.csv --set labels.label=kind",
    ),
    Subcommand(
        "finetune", "labeled images → fine-tuned featurizer (TorchDistributor), registered in MLflow", _finetune,
        _finetune_flags, "conf/finetune.yaml",
        "example:\n  imgfeat finetune --input photos/ --set labels.source=labels.csv --set labels.label=defect\n"
        "  imgfeat featurize --input photos/ --weights models:/imgfeat-finetuned/latest",
    ),
    Subcommand(
        "select", "try candidate featurizers on a labeled sample (into the table), recommend one", _select,
        _select_flags, "conf/select.yaml",
        "example:\n  imgfeat select --input photos/ --set labels.source=labels.csv --set labels.label=defect",
    ),
    Subcommand(
        "score", "images → registered model → scores Delta table (reuses stored embeddings)", _score, _score_flags,
        "conf/score.yaml",
        "example:\n  imgfeat score --model models:/imgfeat/latest --input new_photos/ --output warehouse/scores",
    ),
    Subcommand(
        "serve", "a registered model behind a REST endpoint (MLflow's scoring server)", _serve, _serve_flags,
        "conf/serve.yaml",
        "example:\n  imgfeat serve --model models:/imgfeat/latest --port 5000\n"
        "  curl -s localhost:5000/invocations -H 'Content-Type: application/json' \\\n"
        "    -d '{\"dataframe_split\": {\"columns\": [\"content\"], \"data\": [[\"'$(base64 -w0 cat.jpg)'\"]]}}'",
    ),
    Subcommand(
        "insights", "registered model → one HTML report: projection, activation maps, outliers, near-duplicates, errors",
        _insights, _insights_flags, "conf/insights.yaml",
        "example:\n  imgfeat insights --model models:/imgfeat/3 --output insights",
    ),
    Subcommand(
        "nightly", "featurize new images, retrain past a threshold, score; under the table's lock", _nightly,
        _nightly_flags, "conf/nightly.yaml",
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
    group.add_argument("--verbose", action="store_true", default=d(False),
                       help="show Spark, MLflow and XGBoost logs here instead of in a log file")
    group.add_argument("--log-file", metavar="PATH", default=d(None),
                       help="where those logs go (default: a new file under $TMPDIR/imgfeat-logs/)")
    group.add_argument("--debug", action="store_true", default=d(False), help="show stack traces for user errors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgfeat", description=DESCRIPTION, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_flags(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands, in the order you run them")
    for command in SUBCOMMANDS:
        where = (
            f"\n\nEvery key, with its default, is documented in {command.config}; "
            "--config FILE reads yours, and flags and --set override it." if command.config else ""
        )
        p = sub.add_parser(
            command.name, help=command.summary, description=command.summary + where, epilog=command.example,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.flags(p)
        if command.config:
            p.add_argument("--config", metavar="FILE", help=f"YAML config (default: built-in defaults, as in {command.config})")
            p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                           help="override one config key, e.g. --set tracking.uri=sqlite:///mlflow.db (repeatable)")
        _common_flags(p, defaults=False)
        p.set_defaults(run=command.run)
    return parser


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
    except Exception:
        where = console.log_path()
        if where is not None and where.exists():
            print(f"imgfeat: Spark, MLflow and XGBoost logs of this run: {where}", file=sys.stderr)
        raise


if __name__ == "__main__":
    sys.exit(main())
