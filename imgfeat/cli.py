"""`imgfeat` command line: parse arguments, load config, call `imgfeat.runs`.

Owns: flags, exit codes and what is printed. Must not: hold job logic (the
same functions run from `jobs/*.py` under spark-submit and from notebooks).

Exit codes: 0 the run committed (even if some images were bad); 2 a user
error (bad config, bad input, unknown featurizer, lost commit race), shown
as one line; 1 an unexpected failure (stack trace).
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
    from imgfeat.runs import featurize_run

    cfg = load_config(
        FeaturizeConfig,
        args.config,
        args.set,
        input=args.input,
        table=args.table,
        **{"featurizer.name": args.featurizer, "featurizer.weights": args.weights},
    )
    summary = featurize_run(cfg)
    print(summary.line(), flush=True)
    return 0


def _featurizers(args: argparse.Namespace) -> int:
    from imgfeat.featurizers import list_featurizers

    rows = list_featurizers()
    print(f"{'name':28} {'dim':>5} {'input':>5}  {'offline weights':18} online weights")
    for r in rows:
        print(f"{r.name:28} {r.dim:>5} {r.input_size:>5}  {r.offline:18} {r.online}")
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
    p.set_defaults(run=_featurize)

    p = sub.add_parser("featurizers", help="list registered featurizers")
    p.set_defaults(run=_featurizers)
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
        print(f"imgfeat: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
