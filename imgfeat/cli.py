"""`imgfeat` command line: parse arguments, load config, call `imgfeat.runs`.

Owns: flags, exit codes and what is printed. Must not: hold job logic (the
same functions run from `jobs/*.py` under spark-submit and from notebooks).

Exit codes: 0 the run committed (even if some images were bad); 2 a user
error (bad config, bad input, unknown featurizer), shown as one line; 3 busy:
another run holds the table's lock or committed first, nothing was written,
retry later; 1 an unexpected failure (stack trace).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

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

    cfg = load_config(TrainConfig, args.config, args.set, table=args.table, version=args.version)
    print("\n".join(train_run(cfg).lines()), flush=True)
    return 0


def _score(args: argparse.Namespace) -> int:
    from imgfeat.config import ScoreConfig, load_config

    cfg = load_config(
        ScoreConfig, args.config, args.set, model=args.model, input=args.input, output=args.output, table=args.table
    )
    from imgfeat.runs import score_run  # torch, Spark: only once the config is good

    print(score_run(cfg).line(), flush=True)
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


def _add_config_flags(p: argparse.ArgumentParser, default_config: str | None) -> None:
    p.add_argument("--config", default=default_config, help="YAML config (default: built-in defaults)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set featurizer.batch_size=64 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgfeat", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show stack traces for user errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("featurize", help="images → embeddings Delta table (incremental)")
    _add_config_flags(p, None)
    p.add_argument("--input", help="directory, glob or URI of images (recursive)")
    p.add_argument("--table", help="Delta table path (default warehouse/embeddings)")
    p.add_argument("--featurizer", help="registry name, e.g. efficientnet_lite0, resnet50")
    p.add_argument("--weights", help="default | hub | random | checkpoint path/URI")
    p.add_argument("--summary-json", metavar="PATH", help="also write the run summary (counts, version, model loads) as JSON")
    p.set_defaults(run=_featurize)

    p = sub.add_parser("nightly", help="featurize new images, retrain past a threshold, score; under the table lock")
    _add_config_flags(p, None)
    p.add_argument("--input", help="images to featurize (featurize.input; score.input defaults to it)")
    p.add_argument("--table", help="embeddings table (featurize.table, shared by train and score)")
    p.add_argument(
        "--step", action="append", choices=["featurize", "train", "score"],
        help="run only this step (repeatable; default all three, in order)",
    )
    p.add_argument("--summary-json", metavar="PATH", help="also write what each step did as JSON")
    p.set_defaults(run=_nightly)

    p = sub.add_parser("train", help="embeddings table (+ labels, columns) → XGBoost on Spark → MLflow model")
    _add_config_flags(p, None)
    p.add_argument("--table", help="embeddings Delta table (default warehouse/embeddings)")
    p.add_argument("--version", type=int, help="table version to train on (default: latest)")
    p.set_defaults(run=_train)

    p = sub.add_parser("score", help="images → registered model → scores Delta table (reuses embeddings)")
    _add_config_flags(p, None)
    p.add_argument("--model", help="models:/NAME/VERSION, models:/NAME/latest or models:/NAME@alias")
    p.add_argument("--input", help="directory, glob or URI of images (recursive)")
    p.add_argument("--output", help="scores Delta table (default warehouse/scores)")
    p.add_argument("--table", help="embeddings table to reuse rows from (default warehouse/embeddings)")
    p.set_defaults(run=_score)

    p = sub.add_parser("featurizers", help="list registered featurizers")
    p.set_defaults(run=_featurizers)

    p = sub.add_parser("bench", help="time the Spark job against a hand loop and other baselines")
    p.add_argument("--n", type=int, default=2000, help="benchmark photos (default 2000; cached in --out)")
    p.add_argument("--seed", type=int, default=0, help="photo generator seed")
    p.add_argument("--out", default="bench/out", help="cache and scratch folder (default bench/out)")
    p.add_argument("--master", help="Spark master (default local[<cores>])")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="featurize config override for the Spark job")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    p.add_argument("--skip", action="append", default=[], metavar="STAGES",
                   help="comma-separated: decode, model, loop, spark, naive, udf")
    p.set_defaults(run=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        return args.run(args)
    except ImgfeatError as exc:
        if args.debug:
            raise
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"imgfeat: error: {message}", file=sys.stderr)  # one line, whatever the cause wrote
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
