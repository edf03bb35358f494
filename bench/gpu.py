"""GPU benchmark: the model alone on one GPU and imgfeat's Spark job end to end on it.

Run by `bench/gpu.sh` (its header says what the machine needs). Prints `name: value`
lines like `imgfeat bench` (the same `Report`, photos, ONNX export and Spark job as
`imgfeat.dev.bench`), then the headline last:

    gpu end-to-end/model-only ratio: X   (the Spark job vs the model alone, same dtype and batch)

Stages:
- model torch fp32 / fp16 / bf16 img/s: `TorchFeaturizer.embed` on one prepared uint8 batch
  (host → GPU copy, normalization, network, embeddings back), under CUDA autocast;
- model onnxruntime cuda img/s: the job's verified ONNX graph in ONNX Runtime's CUDA
  provider (skipped with a message where onnxruntime-gpu is absent);
- the Spark job (`imgfeat.dev.bench.spark_figures`): `featurizer.device=cuda`, autocast
  as the job runs it, `local[<cores>]` with `spark.task.cpus` cores per task, whose
  decode threads decode on the CPU while the GPU runs the model (skipped with a message
  where pyspark, pydantic, deltalake or Java are absent).

`--cpu-check` runs every stage on the CPU with a few photos (fp32, ONNX Runtime's CPU
provider standing in for CUDA): it proves the script works, its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imgfeat import console
from imgfeat.dev.baselines import prepare_path
from imgfeat.dev.bench import (
    Report,
    bench_photos,
    exported_graph,
    link_files,
    record_load,
    spark_figures,
    spark_session,
)
from imgfeat.dev.measure import RssSampler, cores, machine, rate, timed
from imgfeat.errors import FeaturizerError
from imgfeat.featurizers import FeaturizerSpec, load_featurizer
from imgfeat.featurizers.registry import resolve_featurizer
from imgfeat.featurizers.runtime import INPUT

#: Modules the Spark stage imports beyond torch (the GPU image lacks them unless installed).
SPARK_NEEDS = ("pyspark", "pydantic", "deltalake", "yaml", "mlflow")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-check", action="store_true", help="tiny run on the CPU: checks the script, not the GPU")
    p.add_argument("--n", type=int, help="photos for the Spark job (default 4000; 8 with --cpu-check)")
    p.add_argument("--batch", type=int, help="images per batch (default 256; 4 with --cpu-check)")
    p.add_argument("--task-cpus", type=int, default=4, help="cores per Spark task = its decode threads (default 4)")
    p.add_argument("--featurizer", default="efficientnet_lite0")
    p.add_argument("--out", type=Path, default=Path("bench/out/gpu"))
    args = p.parse_args(argv)
    check = args.cpu_check
    console.quiet(console.default_log_path("bench-gpu"))  # the JVM's and libraries' chatter: a file
    if not check and not torch.cuda.is_available():
        print(
            "bench/gpu.py: no CUDA device visible to torch (run with --cpu-check to test the script)", file=sys.stderr
        )
        return 2
    n, batch = args.n or (8 if check else 4000), args.batch or (4 if check else 256)
    report = Report(lambda line: print(line, flush=True))
    started = time.monotonic()
    report.add("machine", machine())
    report.add("gpu", "none (--cpu-check)" if check else torch.cuda.get_device_name())
    report.add("torch", f"{torch.__version__} (cuda {torch.version.cuda})")
    record_load(report, "at start")

    spec, weights = _spec(report, args.featurizer)
    (photos, extra), seconds = timed(lambda: bench_photos(args.out, n, 0))
    report.add("photos", f"{len(photos)} JPEG q90, 640x480..1600x1200 (+{len(extra)}), ready in {seconds:.0f} s")
    device = torch.device("cpu" if check else "cuda")
    model = load_featurizer(spec, device=str(device))
    pixels = np.stack([prepare_path(photos[i % len(photos)], model) for i in range(batch)])
    rates = torch_rates(report, model, pixels, device)
    onnxruntime_rate(report, spec, photos, pixels, args.out, cpu=check)
    job_dtype = "fp32" if check else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")  # imgfeat.inference
    spark_rate = spark_job(report, spec, weights, (photos, extra), args.out, batch, args.task_cpus, check)
    report.add("bench wall s", time.monotonic() - started, "{:.0f}")
    record_load(report, "at end")
    if spark_rate:
        report.add(f"gpu end-to-end/model-only ratio (torch {job_dtype})", spark_rate / rates[job_dtype], "{:.2f}")
    return 0


def _spec(report: Report, name: str) -> tuple[FeaturizerSpec, str]:
    """The featurizer with BatchNorm folded (as workers run it); random weights where its
    offline weights package is absent (a GPU image): speed does not depend on the values."""
    weights = "default"
    try:
        spec = resolve_featurizer(name, fold_bn=True)
    except FeaturizerError as exc:
        report.add("weights", f"random ({exc})")
        weights = "random"
        spec = resolve_featurizer(name, weights=weights, fold_bn=True)
    report.add("featurizer", f"{spec.name}, {spec.input_size}px, dim {spec.dim}, weights {spec.weights}")
    return spec, weights


def torch_rates(report: Report, model: Any, pixels: np.ndarray, device: torch.device) -> dict[str, float]:
    """`embed` on one batch: fp32, then fp16 and bf16 autocast on CUDA; best of 5 after a warm-up."""
    dtypes: dict[str, torch.dtype | None] = {"fp32": None}
    if device.type == "cuda":
        dtypes["fp16"] = torch.float16
        if torch.cuda.is_bf16_supported():
            dtypes["bf16"] = torch.bfloat16
    rates = {}
    for name, dtype in dtypes.items():
        run = _autocast_embed(model, pixels, device, dtype)
        run()  # warm-up: cuDNN picks its kernels
        rates[name] = rate(run, len(pixels), reps=5)
        report.add(f"model torch {name} img/s (batch {len(pixels)})", rates[name], "{:.1f}")
    return rates


def _autocast_embed(
    model: Any, pixels: np.ndarray, device: torch.device, dtype: torch.dtype | None
) -> Callable[[], np.ndarray]:
    def run() -> np.ndarray:
        with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
            return model.embed(pixels)

    return run


def onnxruntime_rate(
    report: Report, spec: FeaturizerSpec, photos: list[Path], pixels: np.ndarray, out: Path, cpu: bool
):
    """The job's exported graph in ONNX Runtime's CUDA provider (the CPU one under --cpu-check)."""
    import onnxruntime as ort

    provider = "CPUExecutionProvider" if cpu else "CUDAExecutionProvider"
    if provider not in ort.get_available_providers():
        report.add(
            "model onnxruntime cuda",
            f"skipped: onnxruntime {ort.__version__} has no CUDA provider "
            "(install onnxruntime-gpu matching the CUDA of torch)",
        )
        return
    missing = _missing(("pyspark", "sklearn"))  # the graph is verified on photos as the job does (imgfeat.runs)
    if missing:
        report.add("model onnxruntime cuda", f"skipped: the graph export needs {', '.join(missing)}")
        return
    graph = exported_graph(report, spec, photos, str(out / "onnx"))
    if graph is None:
        return
    session = ort.InferenceSession(graph.path, providers=[provider])
    run = lambda: session.run(None, {INPUT: pixels})  # noqa: E731
    run()
    name = "cpu (stand-in)" if cpu else "cuda"
    report.add(f"model onnxruntime {name} img/s (batch {len(pixels)})", rate(run, len(pixels), reps=5), "{:.1f}")


def spark_job(
    report: Report,
    spec: FeaturizerSpec,
    weights: str,
    photos_extra: tuple[list[Path], list[Path]],
    out: Path,
    batch: int,
    task_cpus: int,
    cpu: bool,
) -> float | None:
    """`imgfeat.dev.bench.spark_figures` with the featurizer on the GPU; returns the warm job's img/s."""
    missing = _missing(SPARK_NEEDS) + ([] if shutil.which("java") or os.environ.get("JAVA_HOME") else ["java"])
    if missing:
        report.add("spark job", f"skipped: this machine lacks {', '.join(missing)} (bench/gpu.sh's header)")
        return None
    from imgfeat.config import FeaturizeConfig, load_config

    photos, extra = photos_extra
    work = out / "run"
    shutil.rmtree(work, ignore_errors=True)
    link_files(photos, work / "spark-input")
    cfg = load_config(
        FeaturizeConfig,
        None,
        [
            "tracking.enabled=false",
            f"featurizer.name={spec.name}",
            f"featurizer.device={'cpu' if cpu else 'cuda'}",
            "featurizer.runtime=torch",  # the runtime of the model-only rates (auto picks it on a GPU too)
            f"featurizer.batch_size={batch}",
            f"featurizer.weights={weights}",
        ],
        input=str(work / "spark-input"),
        table=str(work / "table"),
    )
    task_cpus = min(task_cpus, cores())
    spark, seconds = timed(lambda: spark_session(None, {"spark.task.cpus": str(task_cpus)}))
    report.add("spark session start s", seconds, "{:.1f}")
    report.add("spark tasks", f"{cores() // task_cpus} at a time, {task_cpus} decode threads each")
    sampler = RssSampler()
    with sampler:
        spark_figures(report, sampler, spark, cfg, photos, extra, work)
    return report.figures.get("spark job img/s")


def _missing(modules: tuple[str, ...]) -> list[str]:
    from importlib.util import find_spec

    return [m for m in modules if find_spec(m) is None]


if __name__ == "__main__":
    sys.exit(main())
