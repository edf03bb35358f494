"""`imgfeat bench`: imgfeat's Spark featurize job against its baselines, in one run.

Owns: the cached benchmark photos (`<out>/photos-n<N>-s<seed>`), the order of
the run, the stage micro-benchmarks (decode, model: torch and ONNX Runtime), the
Spark job with each runtime, the incremental rerun, and printing every figure as
one `name: value` line, ending with
`spark/loop ratio: X`. Must not: change how the job runs (it calls
`runs.featurize_run` exactly as the CLI does) or be imported by library code.

Every figure is measured in this one process, on the same images, with the
same featurizer spec, one after the other; `bench/README.md` records them.
The baselines are `imgfeat.dev.baselines`; timing and memory sampling,
`imgfeat.dev.measure`. The model stages import neither pydantic nor Spark, so
`bench/gpu.py` reuses them on a GPU machine that has only torch.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow.parquet as pq
import torch

from imgfeat.decode import decode_image
from imgfeat.dev.baselines import naive_udf, predict_batch, prepare_path, tuned_loop
from imgfeat.dev.measure import MIB, RssSampler, cores, machine, rate, timed
from imgfeat.dev.samples import write_bench_photos
from imgfeat.errors import ConfigError
from imgfeat.featurizers import FeaturizerSpec, load_featurizer
from imgfeat.featurizers.backbone import build_network
from imgfeat.featurizers.featurizer import TorchFeaturizer
from imgfeat.featurizers.runtime import Graph, RuntimeUnavailable, cached_graph, load_graph_featurizer

if TYPE_CHECKING:  # the config (pydantic) and the jobs (Spark) load only where a stage needs them
    from imgfeat.config import FeaturizeConfig

#: Stages that `--skip` can leave out (the Spark job is what the ratios need).
STAGES = ("decode", "model", "startup", "loop", "spark", "naive", "udf")


@dataclass(frozen=True)
class BenchOptions:
    """What one bench run measures; the defaults are what `make bench` runs."""

    n: int = 2000  # 7.7 min for `make bench` on the idle 2-core machine (bench/README.md)
    seed: int = 0
    out: Path = Path("bench/out")
    master: str | None = None  # None: local[<cores>]
    overrides: tuple[str, ...] = ()  # featurize config `--set`s for the Spark job
    loop_batch: int = 64
    naive_batch: int = 10
    udf_batch: int = 64
    decode_sample: int = 200  # images timed by the decode micro-benchmark
    compile: bool = False  # also time torch.compile (minutes of compiling on 2 cores)
    skip: tuple[str, ...] = ()


class Report:
    """Prints each figure as it is measured and keeps them for the JSON record."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.figures: dict[str, Any] = {}
        self._emit = emit

    def add(self, name: str, value: Any, fmt: str = "{}") -> None:
        self.figures[name] = value
        self._emit(f"{name}: {fmt.format(value)}")


def run_bench(opts: BenchOptions, emit: Callable[[str], None] = print, spark: Any = None) -> dict[str, Any]:
    """Measure everything `opts` asks for; returns the figures (also written as JSON).

    `spark`: an existing session to use (tests); default a local one with
    `opts.master` (default `local[<cores>]`).
    """
    unknown = sorted(set(opts.skip) - set(STAGES))
    if unknown:
        raise ConfigError(f"bench: unknown stage(s) to skip {unknown}; known: {', '.join(STAGES)}")
    from imgfeat.config import FeaturizeConfig, load_config
    from imgfeat.runs import featurizer_spec

    report = Report(emit)
    started = time.monotonic()
    report.add("machine", machine())
    record_load(report, "at start")

    (photos, extra), seconds = timed(lambda: bench_photos(opts.out, opts.n, opts.seed))
    mb = sum(p.stat().st_size for p in photos) / 1e6
    report.add("images", f"{len(photos)} JPEG q90, 640x480..1600x1200, {mb:.0f} MB (+{len(extra)} for the rerun)")
    report.add("photos ready s", seconds, "{:.1f}")

    work = opts.out / "run"
    shutil.rmtree(work, ignore_errors=True)
    inputs = work / "input"  # the baselines' photos; the Spark job's folder gains the 1 % later
    link_files(photos, inputs)
    link_files(photos, work / "spark-input")
    cfg = load_config(
        FeaturizeConfig,
        None,
        ["tracking.enabled=false", *opts.overrides],
        input=str(work / "spark-input"),
        table=str(work / "table"),
    )
    spec = featurizer_spec(cfg)
    report.add("featurizer", f"{spec.name} (fold_bn={spec.fold_bn}, batch {cfg.featurizer.batch_size})")
    _read_all(photos)  # page cache warm for everyone alike

    if "decode" not in opts.skip:
        decode_figures(report, photos[: opts.decode_sample], spec)
    graph = exported_graph(report, spec, photos, cfg.featurizer.onnx_cache)
    if "model" not in opts.skip:
        model_figures(report, photos[: opts.loop_batch], spec, opts.loop_batch, opts.compile, graph)
    if "startup" not in opts.skip:
        startup_figures(report, spec, graph)

    sampler = RssSampler()
    with sampler:
        if "loop" not in opts.skip:
            record_load(report, "before the loop")
            with sampler.measure("loop", own=True):
                (load_s, run_s) = tuned_loop(photos, spec, work / "loop.parquet", opts.loop_batch)
            report.add("loop model load s", load_s, "{:.1f}")
            report.add("loop img/s", len(photos) / run_s, "{:.1f}")
            report.add("loop img/s incl. model load", len(photos) / (load_s + run_s), "{:.1f}")
            report.add("loop peak RSS MiB", sampler.peak("loop"), "{:.0f}")

        if spark is None:
            spark, seconds = timed(lambda: spark_session(opts.master))
            report.add("spark session start s", seconds, "{:.1f}")
        report.add("spark master", f"{spark.sparkContext.master} (task cpus {spark.conf.get('spark.task.cpus', '1')})")

        if "spark" not in opts.skip:
            spark_figures(report, sampler, spark, cfg, photos, extra, work)
        baselines = (
            ("naive", "naive udf", naive_udf, opts.naive_batch),
            ("udf", "predict_batch_udf", predict_batch, opts.udf_batch),
        )
        for stage, label, baseline, batch in baselines:
            if stage in opts.skip:
                continue
            record_load(report, f"before {label}")
            with sampler.measure(stage):
                seconds = baseline(spark, str(inputs), spec, str(work / f"{stage}.parquet"), batch)
            report.add(f"{label} img/s", len(photos) / seconds, "{:.1f}")
            report.add(f"{label} worker peak RSS MiB", sampler.peak(stage), "{:.0f}")

    report.add("bench wall s", time.monotonic() - started, "{:.0f}")
    record_load(report, "at end")
    _ratios(report)
    (opts.out / f"results-n{opts.n}-s{opts.seed}.json").write_text(json.dumps(report.figures, indent=1))
    return report.figures


def _ratios(report: Report) -> None:
    """The headline ratios, `spark/loop ratio` last (warm workers vs a loaded model)."""
    f = report.figures
    pairs = (
        ("spark onnxruntime/torch ratio", "spark job onnxruntime img/s", "spark job torch img/s"),
        ("spark onnxruntime/loop ratio", "spark job onnxruntime img/s", "loop img/s"),
        ("spark onnxruntime/model onnxruntime ratio", "spark job onnxruntime img/s", "model onnxruntime img/s"),
        ("spark torch/model bn-folded ratio", "spark job torch img/s", "model bn-folded img/s"),
        ("spark/naive ratio", "spark job img/s", "naive udf img/s"),
        ("spark/predict_batch_udf ratio", "spark job img/s", "predict_batch_udf img/s"),
        (
            "spark/loop ratio, cold (worker start vs model load included)",
            "spark job cold img/s",
            "loop img/s incl. model load",
        ),
        ("spark/loop ratio", "spark job img/s", "loop img/s"),
    )
    for name, top, bottom in pairs:
        if f.get(top) and f.get(bottom):
            report.add(name, f[top] / f[bottom], "{:.2f}")


# ------------------------------------------------------------------ inputs
def bench_photos(out: Path, n: int, seed: int) -> tuple[list[Path], list[Path]]:
    """`n` benchmark photos plus 1 % more (at least one) for the incremental rerun.

    Cached under `out/photos-n<n>-s<seed>`: made once (about 30 img/s on two
    cores), reused by later runs. A `COMPLETE` marker guards against a cache
    left half-written by an interrupted run.
    """
    if n < 1:
        raise ConfigError(f"bench: n must be >= 1, got {n}")
    extra = max(1, round(n / 100))
    folder = Path(out) / f"photos-n{n}-s{seed}"
    marker = folder / "COMPLETE"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        write_bench_photos(folder, n + extra, seed=seed)
        marker.write_text(f"{n + extra} images, seed {seed}\n")
    paths = sorted(folder.glob("bench_*.jpg"))
    if len(paths) != n + extra:
        raise RuntimeError(f"{folder} holds {len(paths)} photos, expected {n + extra}: delete it and rerun")
    return paths[:n], paths[n:]


def link_files(paths: Sequence[Path], dest: Path) -> None:
    """Put `paths` in `dest` without copying bytes (hard links keep size and mtime)."""
    dest.mkdir(parents=True, exist_ok=True)
    for p in paths:
        try:
            os.link(p, dest / p.name)
        except OSError:  # another file system
            shutil.copy2(p, dest / p.name)


def _read_all(paths: Sequence[Path]) -> None:
    for p in paths:
        p.read_bytes()


# ------------------------------------------------------- micro-benchmarks
def decode_figures(report: Report, paths: Sequence[Path], spec: FeaturizerSpec) -> None:
    """Decode alone, one thread: PIL at full size vs JPEG draft mode (both via `decode_image`)."""
    data = [p.read_bytes() for p in paths]
    big = sum(1 for d in data if min(_jpeg_size(d)) > 2 * spec.input_size)
    full = rate(lambda: [decode_image(d) for d in data], len(data))
    draft = rate(lambda: [decode_image(d, draft_size=spec.resize_size) for d in data], len(data))
    report.add("decode sample", f"{len(data)} photos, {big} larger than 2x the {spec.input_size}px input")
    report.add("decode full img/s", full, "{:.1f}")
    report.add("decode draft img/s", draft, "{:.1f}")
    report.add("decode draft/full ratio", draft / full, "{:.2f}")


def exported_graph(report: Report, spec: FeaturizerSpec, photos: Sequence[Path], onnx_cache: str) -> Graph | None:
    """The featurizer's verified ONNX graph (exported once, then cached), as the Spark job uses it."""
    from imgfeat.runs import verification_photos

    try:
        graph, seconds = timed(
            lambda: cached_graph(
                dataclasses.replace(spec, fold_bn=True), verification_photos([str(p) for p in photos[:4]]), onnx_cache
            )
        )
    except RuntimeUnavailable as exc:
        report.add("onnx graph", f"unavailable: {exc}")
        return None
    report.add(
        "onnx graph",
        f"{Path(graph.path).name}, {os.path.getsize(graph.path) / MIB:.1f} MiB, "
        f"max abs diff {graph.max_abs_diff:.1e} vs torch on {graph.images} photos",
    )
    report.add("onnx graph ready s (export + check, or cache hit)", seconds, "{:.1f}")
    return graph


def model_figures(
    report: Report, paths: Sequence[Path], spec: FeaturizerSpec, batch: int, compile: bool, graph: Graph | None
) -> None:
    """Model alone on one prepared batch, torch threads = cores, best of 3 timed passes.

    eager: NCHW, BatchNorm unfolded; channels_last: the same network in
    channels_last memory; bn-folded: what torch workers run (channels_last +
    folded BatchNorm); onnxruntime: the exported graph (uint8 pixels in, so
    normalization included) in an ONNX Runtime session with `cores` threads,
    what workers run under `runtime: onnxruntime` / CPU `auto`. The folded and
    ONNX embeddings must equal eager's within 1e-4.
    """
    torch.set_num_threads(cores())
    plain = cast(TorchFeaturizer, load_featurizer(dataclasses.replace(spec, fold_bn=False)))
    folded = cast(TorchFeaturizer, load_featurizer(dataclasses.replace(spec, fold_bn=True)))
    pixels = np.stack([prepare_path(p, plain) for p in _cycle(paths, batch)])
    x_cl = plain.to_input(pixels)
    x_nchw = x_cl.contiguous()
    nchw_net = build_network(dataclasses.replace(spec, fold_bn=False)).eval()
    rates = {
        "eager": _forward_rate(nchw_net, x_nchw),
        "channels_last": _forward_rate(plain.network, x_cl),
        "bn-folded": _forward_rate(folded.network, x_cl),
    }
    for name, per_s in rates.items():
        report.add(f"model {name} img/s", per_s, "{:.1f}")
    with torch.inference_mode():
        diff = (folded.network(x_cl) - nchw_net(x_nchw)).abs().max().item()
    report.add("model bn-folded/eager ratio", rates["bn-folded"] / rates["eager"], "{:.2f}")
    report.add("model bn-folded/channels_last ratio", rates["bn-folded"] / rates["channels_last"], "{:.2f}")
    report.add("model bn-folded max abs diff", diff, "{:.2e}")
    if graph is not None:
        onnx = load_graph_featurizer(spec, graph.path, cores())
        onnx_rate = rate(lambda: onnx.embed(pixels), len(pixels), reps=3)
        report.add("model onnxruntime img/s", onnx_rate, "{:.1f}")
        report.add("model onnxruntime/torch ratio", onnx_rate / rates["bn-folded"], "{:.2f}")
        report.add(
            "model onnxruntime max abs diff", float(np.abs(onnx.embed(pixels) - plain.embed(pixels)).max()), "{:.2e}"
        )
    if compile:
        compiled, seconds = timed(lambda: _compiled(folded.network, x_cl))
        report.add("model torch.compile s to compile", seconds, "{:.0f}")
        report.add("model torch.compile img/s", _forward_rate(compiled, x_cl), "{:.1f}")


def _compiled(net: torch.nn.Module, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    compiled = torch.compile(net)
    with torch.inference_mode():
        compiled(x)  # compiles
    return compiled


def _forward_rate(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, reps: int = 3) -> float:
    with torch.inference_mode():
        net(x)  # warm-up: oneDNN picks its kernels on the first call
        best = min(timed(lambda: net(x))[1] for _ in range(reps))
    return len(x) / best


# ----------------------------------------------------- worker start-up
_STARTUP = """
import pickle, sys, time
started = time.perf_counter()
import imgfeat.featurize
spec = pickle.loads(bytes.fromhex(sys.argv[1]))
if sys.argv[2]:
    from imgfeat.featurizers.runtime import load_graph_featurizer
    load_graph_featurizer(spec, sys.argv[2], int(sys.argv[3]))
else:
    import torch
    from imgfeat.featurizers import load_featurizer
    torch.set_num_threads(int(sys.argv[3]))
    load_featurizer(spec)
print(time.perf_counter() - started, "torch" in sys.modules)
"""


def startup_figures(report: Report, spec: FeaturizerSpec, graph: Graph | None, reps: int = 3) -> None:
    """What a fresh Python worker pays before its first batch: imports plus the
    torch model build (weights read, BN folded) or the ONNX Runtime session;
    best of `reps` fresh processes each."""
    import pickle
    import subprocess

    runtimes = [("torch", "")] + ([("onnxruntime", graph.path)] if graph else [])
    for name, path in runtimes:
        times = []
        for _ in range(reps):
            out = subprocess.run(
                [sys.executable, "-c", _STARTUP, pickle.dumps(spec).hex(), path, str(cores())],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            times.append(float(out[0]))
        report.add(f"worker start {name} s", min(times), "{:.2f}")
        report.add(f"worker start {name} imports torch", out[1])
    if graph:
        f = report.figures
        report.add(
            "worker start onnxruntime/torch ratio",
            f["worker start onnxruntime s"] / f["worker start torch s"],
            "{:.2f}",
        )


# -------------------------------------------------------- the Spark job
def spark_figures(
    report: Report,
    sampler: RssSampler,
    spark: Any,
    cfg: FeaturizeConfig,
    photos: Sequence[Path],
    extra: Sequence[Path],
    work: Path,
) -> None:
    """imgfeat's featurize job to a fresh Delta table, twice: first with the
    session's Python workers cold (they start, import torch and load the model
    inside the job), then warm (a second fresh table, as any later job in a
    session), then warm with the other runtime (torch ↔ onnxruntime) to a third;
    then the default job's rerun with 1 % new files and one with nothing new.
    """
    from imgfeat.runs import featurize_run

    record_load(report, "before the spark jobs")
    cold = cfg.model_copy(update={"table": str(work / "table-cold")})
    summary, seconds = timed(lambda: featurize_run(cold, spark))
    _check(summary, len(photos), "featurize job (cold)")
    report.add("spark job cold s", seconds, "{:.1f}")
    report.add("spark job cold img/s", len(photos) / seconds, "{:.1f}")

    with sampler.measure("spark"):
        summary, seconds = timed(lambda: featurize_run(cfg, spark))
    _check(summary, len(photos), "featurize job")
    report.add("spark job runtime", summary.runtime)
    report.add("spark job s", seconds, "{:.1f}")
    report.add("spark job img/s", len(photos) / seconds, "{:.1f}")
    report.add(f"spark job {summary.runtime} img/s", len(photos) / seconds, "{:.1f}")
    report.add("spark job worker peak RSS MiB", sampler.peak("spark"), "{:.0f}")
    report.add("spark job workers' total peak RSS MiB", sampler.peak("spark", total=True), "{:.0f}")
    loop_file = work / "loop.parquet"
    if loop_file.exists():
        report.add("spark vs loop max abs diff", _max_diff(cfg.table, loop_file), "{:.2e}")
    other_runtime(report, spark, cfg, summary.runtime, len(photos), work)

    link_files(extra, Path(str(cfg.input)))
    again, incr = timed(lambda: featurize_run(cfg, spark))
    _check(again, len(extra), "incremental rerun")
    report.add(f"incremental rerun s ({len(extra)} new of {len(photos) + len(extra)})", incr, "{:.2f}")
    report.add("incremental/full ratio", incr / seconds, "{:.3f}")
    idle, idle_s = timed(lambda: featurize_run(cfg, spark))
    _check(idle, 0, "rerun with nothing new")
    report.add("rerun with nothing new s", idle_s, "{:.2f}")


def other_runtime(report: Report, spark: Any, cfg: FeaturizeConfig, default: str, n: int, work: Path) -> None:
    """The warm Spark job again with the runtime the default did not use."""
    from imgfeat.runs import featurize_run

    other = "torch" if default == "onnxruntime" else "onnxruntime"
    featurizer = cfg.featurizer.model_copy(update={"runtime": other})
    again = cfg.model_copy(update={"table": str(work / f"table-{other}"), "featurizer": featurizer})
    try:
        summary, seconds = timed(lambda: featurize_run(again, spark))
    except RuntimeUnavailable as exc:
        report.add(f"spark job {other}", f"unavailable: {exc}")
        return
    _check(summary, n, f"featurize job ({other})")
    report.add(f"spark job {other} img/s", n / seconds, "{:.1f}")


def _check(summary: Any, expected: int, what: str) -> None:
    """A benchmark of a run that did not do its work would be meaningless."""
    wanted = {"ok": expected} if expected else {}
    if summary.counts != wanted:
        raise RuntimeError(f"{what}: expected {wanted} rows, got {summary.counts}")


def _max_diff(table: str, loop_file: Path) -> float:
    from deltalake import DeltaTable

    rows = DeltaTable(table).to_pyarrow_table(columns=["path", "embedding"]).to_pylist()
    spark_by_name = {Path(r["path"]).name: r["embedding"] for r in rows}
    loop = pq.read_table(loop_file).to_pylist()
    return max(
        float(np.abs(np.asarray(spark_by_name[Path(r["path"]).name]) - np.asarray(r["embedding"])).max()) for r in loop
    )


def spark_session(master: str | None, conf: dict[str, str] | None = None) -> Any:
    from imgfeat.config import SparkConfig
    from imgfeat.session import get_spark  # its workers run this interpreter (the venv)

    quiet = {"spark.ui.showConsoleProgress": "false"}  # progress bars would break the `name: value` lines
    spark = get_spark(
        SparkConfig(master=master or f"local[{cores()}]", app_name="imgfeat-bench", conf={**quiet, **(conf or {})})
    )
    spark.range(1).count()  # the JVM and its first job are start-up, not the job's time
    return spark


# ----------------------------------------------------------------- helpers
def _cycle(paths: Sequence[Path], count: int) -> Iterator[Path]:
    return (paths[i % len(paths)] for i in range(count))


def _jpeg_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.size


def record_load(report: Report, when: str) -> None:
    """Other users' load skews every rate: record it beside them."""
    report.add(f"load average {when}", " ".join(f"{x:.2f}" for x in os.getloadavg()))
