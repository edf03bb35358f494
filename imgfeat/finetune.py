"""Fine-tuning a featurizer on the user's labels, distributed with Spark's TorchDistributor.

Owns: which images a fine-tuning run trains on (`plan`: labels, task, classes
and split exactly as `imgfeat.dataset` reads them for training; the non-test images of
cross-validation folds 1..k-1 are trained on, fold 0 gives the per-epoch
metric, the test split is never read), the checks on those images before any training (`check`), the
function each TorchDistributor process runs (`train_process`: DDP with gloo on
CPU or nccl on GPU, AdamW, warm-up then cosine decay, a lower learning rate for
the network than for the head, horizontal flips, mixed precision on GPU), and
its `Result`: the network as a `weights_only`-loadable state_dict in its
architecture's own naming (what ``weights=<file>`` loads), the head, and the
per-epoch history, and the fine-tuned featurizer's files (`save`: the network
as `backbone.pt`, the head, `featurizer.json`). Must not: import `imgfeat.train`
(fine-tuning comes before training), log to MLflow, register models or write
tables (`runs` and `tracking` do), or prepare images any other way than
`imgfeat.featurize.prepare_path` does for featurizing (training sees exactly
the pixels the featurizer will).

`train_process` is a plain module-level function, pickled to the processes by
TorchDistributor; everything it needs comes in one picklable `Job` (paths and
targets, never DataFrames). Each process reads its own shard of the paths.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from imgfeat import faults
from imgfeat.config import FinetuneConfig
from imgfeat.cv import classification_metrics, regression_metrics
from imgfeat.dataset import PRIMARY_METRIC, infer_task, with_labels, with_target
from imgfeat.errors import FeaturizerError, InputError, Status
from imgfeat.featurize import WorkerOptions, featurize_listing, prepare_path
from imgfeat.featurizers import FeaturizerSpec, resolve_featurizer
from imgfeat.featurizers.featurizer import GRAYSCALE_ARCH
from imgfeat.featurizers.registered import BACKBONE_FILE
from imgfeat.featurizers.resolve import resolve_spec

log = logging.getLogger("imgfeat")

#: Decodes every image once on Spark before training (cheap: 16 px draft decode),
#: so undecodable ones are skipped and counted up front, with the featurize job's code.
CHECKER = "grayscale16"


# ----------------------------------------------------------------------------- driver: what to train on
@dataclass(frozen=True)
class Plan:
    """The images of a fine-tuning run, decided on the driver.

    `train` and `validation` are (path, target) pairs: the class index, or the
    value for regression. `counts` says where every listed image went.
    """

    task: str
    classes: tuple[str, ...]
    train: tuple[tuple[str, float], ...]
    validation: tuple[tuple[str, float], ...]
    train_sha256: frozenset[str]  # content hashes trained on (the no-leakage record)
    counts: dict[str, int]
    skipped_examples: tuple[str, ...] = ()  # "path: error" of a few skipped images


def check_network(spec: FeaturizerSpec) -> None:
    """A featurizer fine-tuning can put a head on (before Spark starts)."""
    if spec.arch == GRAYSCALE_ARCH:
        raise FeaturizerError(f"{spec.name} has no network to fine-tune; pick a CNN, e.g. efficientnet_lite0")


def plan(spark: SparkSession, cfg: FinetuneConfig, listing: DataFrame, listed: int) -> Plan:
    """Decode-check, label and split the listed images; keep train and validation."""
    opts = WorkerOptions(batch_size=256, max_pixels=cfg.read.max_pixels, decode_threads=cfg.read.decode_threads)
    checked = featurize_listing(
        listing, resolve_featurizer(CHECKER), opts, files_per_partition=cfg.read.files_per_partition, count=listed
    ).select("path", "content_sha256", "phash", "status", "error")
    rows = with_labels(spark, checked, cfg.labels).cache()
    try:
        by_status = {s: int(n) for s, n in rows.groupBy("status").count().collect()}
        bad = rows.where(F.col("status") != Status.OK.value)
        examples = tuple(f"{r.path}: {r.error}" for r in bad.select("path", "error").limit(3).collect())
        ok = rows.where(F.col("status") == Status.OK.value)
        labeled = ok.where(F.col("label").isNotNull())
        if labeled.limit(1).count() == 0:
            where = cfg.labels.source or "the folder names"
            raise InputError(
                f"none of the {by_status.get('ok', 0)} decodable images under {cfg.input} has a label in {where}"
            )
        task, classes = infer_task(labeled, cfg.task)
        target = with_target(labeled, task, classes, cfg.split, cfg.labels)
        frame: pd.DataFrame = target.select("path", "content_sha256", "label_index", "split", "fold").toPandas()
        unlabeled = ok.count() - len(frame)
    finally:
        rows.unpersist()
    # `imgfeat train` refits on every non-test image; fine-tuning holds out its
    # fold 0 for the per-epoch metric and never reads the test split.
    held_out = frame["split"] == "test"
    parts = {
        "train": frame[~held_out & (frame["fold"] != 0)],
        "validation": frame[~held_out & (frame["fold"] == 0)],
        "test": frame[held_out],
    }
    counts = {
        "listed": listed,
        **{f"skipped_{s}": n for s, n in sorted(by_status.items()) if s != Status.OK.value},
        "unlabeled": unlabeled,
        "train": len(parts["train"]),
        "validation": len(parts["validation"]),
        "test_held_out": len(parts["test"]),
    }
    return Plan(
        task=task,
        classes=classes,
        train=_pairs(parts["train"]),
        validation=_pairs(parts["validation"]),
        train_sha256=frozenset(parts["train"]["content_sha256"]),
        counts=counts,
        skipped_examples=examples,
    )


def _pairs(frame: pd.DataFrame) -> tuple[tuple[str, float], ...]:
    ordered = frame.sort_values("path")  # a run's order does not depend on Spark's
    return tuple(zip(ordered["path"].tolist(), ordered["label_index"].astype(float).tolist(), strict=True))


def check(p: Plan, cfg: FinetuneConfig) -> None:
    """Refuse a plan that cannot train (one line each, before any training)."""
    if p.task == "classification":
        present = sorted({int(t) for _, t in p.train})
        if len(present) < 2:
            names = [p.classes[i] for i in present]
            raise InputError(f"the train split has fewer than two classes ({names}); label more images")
        unseen = [c for i, c in enumerate(p.classes) if i not in present]
        if unseen:  # all its non-test images hash into fold 0 (or it has none): the head never learns it
            raise InputError(
                f"class {unseen[0]!r} has no images in the folds fine-tuning trains on (1..{cfg.split.folds - 1}): "
                "label more images of it, lower split.folds or change split.seed"
            )
    processes = cfg.distributor.num_processes
    if len(p.train) < cfg.batch_size * processes:
        raise InputError(
            f"too few images for the batch size: {len(p.train)} in the train split, but batch_size "
            f"{cfg.batch_size} x {processes} process(es) needs {cfg.batch_size * processes}; lower batch_size"
        )
    if not p.validation:
        raise InputError(
            "cross-validation fold 0 (the per-epoch validation images) is empty; label more images or lower split.folds"
        )


# ----------------------------------------------------------------------------- the training processes
@dataclass(frozen=True)
class Job:
    """Everything `train_process` needs, pickled to every process."""

    spec: FeaturizerSpec
    task: str
    classes: tuple[str, ...]
    train: tuple[tuple[str, float], ...]
    validation: tuple[tuple[str, float], ...]
    cfg: FinetuneConfig
    target_mean: float = 0.0  # regression targets are standardized for the loss
    target_std: float = 1.0


@dataclass(frozen=True)
class Epoch:
    """One epoch's line: mean train loss, validation metrics, train images per second."""

    epoch: int
    loss: float
    validation: dict[str, float]
    images_per_second: float
    seconds: float

    def line(self, epochs: int, task: str) -> str:
        name = PRIMARY_METRIC[task]
        return (
            f"finetune: epoch {self.epoch}/{epochs} loss {self.loss:.4f} validation {name} "
            f"{self.validation[name]:.4f} ({self.seconds:.1f} s, {self.images_per_second:.1f} img/s)"
        )


@dataclass
class Result:
    """What the processes hand back (rank 0's, identical on every rank)."""

    backbone: bytes  # torch.save of the network's state_dict, arch naming
    head: bytes  # torch.save of {"weight", "bias"} of the linear head
    history: list[Epoch] = field(default_factory=list)
    skipped: int = 0  # images that failed to load during training (after the up-front check)
    seconds: float = 0.0


def save(cfg: FinetuneConfig, base: FeaturizerSpec, p: Plan, result: Result, folder: Path) -> FeaturizerSpec:
    """Write the fine-tuned featurizer into the empty `folder` (the network as `BACKBONE_FILE`, what
    ``weights=`` loads; `head.pt`; `featurizer.json`, what it is) and the network to `cfg.output`
    when set; returns the featurizer, resolved from the written weights."""
    weights = folder / BACKBONE_FILE
    weights.write_bytes(result.backbone)
    (folder / "head.pt").write_bytes(result.head)
    tuned = resolve_spec(cfg.featurizer.model_copy(update={"weights": str(weights), "weights_sha256": None}))
    (folder / "featurizer.json").write_text(
        json.dumps(
            {
                "name": tuned.name,
                "arch": tuned.arch,
                "base_weights": base.weights,
                "pooling": tuned.pooling,
                "layers": list(tuned.layers),
                "dim": tuned.dim,
                "task": p.task,
                "classes": list(p.classes),
                "weights_sha256": tuned.weights_sha256,
                "fingerprint": tuned.fingerprint,
            },
            indent=1,
        )
    )
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.output).write_bytes(result.backbone)
    return tuned


def job_for(p: Plan, spec: FeaturizerSpec, cfg: FinetuneConfig) -> Job:
    targets = np.array([t for _, t in p.train], dtype=np.float64)
    mean, std = (float(targets.mean()), float(targets.std() or 1.0)) if p.task == "regression" else (0.0, 1.0)
    return Job(spec, p.task, p.classes, p.train, p.validation, cfg, mean, std)


def fine_tune(job: Job) -> Result:
    """Run `train_process` in `cfg.distributor.num_processes` processes through TorchDistributor."""
    from pyspark.ml.torch.distributor import TorchDistributor

    d = job.cfg.distributor
    distributor = TorchDistributor(num_processes=d.num_processes, local_mode=d.local_mode, use_gpu=d.use_gpu)
    return cast(Result, distributor.run(train_process, job))  # rank 0's return value


def train_process(job: Job) -> Result:
    """One DDP rank (TorchDistributor sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous)."""
    import torch
    import torch.distributed as dist

    gpu = job.cfg.distributor.use_gpu
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if gpu:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    dist.init_process_group("nccl" if gpu else "gloo")
    try:
        result = _Trainer(job, dist.get_rank(), dist.get_world_size(), device).run()
        shared = [result]
        dist.broadcast_object_list(shared, src=0)  # every rank returns rank 0's (TorchDistributor keeps one)
        return shared[0]
    finally:
        dist.destroy_process_group()


class _Trainer:
    """The training loop of one rank."""

    def __init__(self, job: Job, rank: int, world: int, device: Any) -> None:
        import torch
        from torch import nn
        from torch.nn.parallel import DistributedDataParallel

        from imgfeat.featurizers.backbone import build_network
        from imgfeat.featurizers.featurizer import TorchFeaturizer

        self.job, self.cfg, self.rank, self.world, self.device = job, job.cfg, rank, world, device
        torch.manual_seed(self.cfg.seed)  # the same head on every rank (DDP also broadcasts rank 0's)
        self.backbone = build_network(job.spec)
        outputs = len(job.classes) if job.task == "classification" else 1
        self.head = nn.Linear(job.spec.dim, outputs)
        self.model = nn.Sequential(self.backbone, self.head).to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]  # stubs: no memory_format
        if self.cfg.backbone_lr == 0:
            self.backbone.requires_grad_(False)
        self._freeze_unused()
        self.ddp = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.images = TorchFeaturizer(job.spec, self.backbone, device)  # prepare + normalize, as featurizing
        self.steps = math.ceil(len(job.train) / world) // self.cfg.batch_size
        self.optimizer = torch.optim.AdamW(self._groups(), lr=self.cfg.lr)
        total = self.steps * self.cfg.epochs
        warm = round(self.cfg.warmup * total)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: warmup_cosine(s, warm, total))
        self.autocast, self.scaler = self._precision()
        self.pool = ThreadPoolExecutor(max_workers=max(2, torch.get_num_threads()), thread_name_prefix="imgfeat-load")

    def _freeze_unused(self) -> None:
        """Stop training parameters the embedding never uses (a timm model's own classifier,
        stages past the requested layers): DDP expects a gradient for every trained one.
        Found with one backward pass in eval mode, which leaves BatchNorm statistics alone."""
        import torch

        size = self.job.spec.input_size
        self.model.eval()
        self.model(torch.zeros(2, 3, size, size, device=self.device)).float().sum().backward()
        for p in self.model.parameters():
            if p.grad is None:
                p.requires_grad_(False)
            p.grad = None

    def _groups(self) -> list[dict[str, Any]]:
        """AdamW groups: network / head learning rates; no weight decay on biases and norms."""
        groups = []
        for module, lr in ((self.backbone, self.cfg.backbone_lr), (self.head, self.cfg.lr)):
            params = [p for p in module.parameters() if p.requires_grad]
            for decay in (True, False):
                chosen = [p for p in params if (p.ndim > 1) == decay]
                if chosen:
                    groups.append({"params": chosen, "lr": lr, "weight_decay": self.cfg.weight_decay if decay else 0.0})
        return groups

    def _precision(self):  # -> (autocast context factory, GradScaler or None)
        import contextlib

        import torch

        if self.device.type != "cuda" or not self.cfg.mixed_precision:
            return contextlib.nullcontext, None
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        return (lambda: torch.autocast("cuda", dtype=dtype)), scaler

    def run(self) -> Result:
        import torch

        started = time.monotonic()
        history, skipped = [], 0
        try:
            for epoch in range(1, self.cfg.epochs + 1):
                loss, seen, failed, seconds = self._epoch(epoch)
                totals = torch.tensor([loss, seen, failed], dtype=torch.float64)
                torch.distributed.all_reduce(totals)
                skipped += int(totals[2])
                metrics, val_failed = self._validate()
                skipped += val_failed
                done = Epoch(
                    epoch, float(totals[0]) / max(float(totals[1]), 1.0), metrics, float(totals[1]) / seconds, seconds
                )
                history.append(done)
                if self.rank == 0:
                    log.warning(done.line(self.cfg.epochs, self.job.task))
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)
        from imgfeat.featurizers.backbone import checkpoint_state_dict

        return Result(
            backbone=_saved(checkpoint_state_dict(self.backbone)),
            head=_saved(self.head.state_dict()),
            history=history,
            skipped=skipped,
            seconds=time.monotonic() - started,
        )

    def _epoch(self, epoch: int) -> tuple[float, int, int, float]:
        """Train one epoch on this rank's shard: (loss sum, images, failed loads, seconds)."""
        import torch
        import torch.nn.functional as nnf

        self.model.train()
        if self.cfg.freeze_bn_stats:
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        mine = shard(len(self.job.train), self.rank, self.world, self.cfg.seed + epoch)
        batches = [mine[i * self.cfg.batch_size : (i + 1) * self.cfg.batch_size] for i in range(self.steps)]
        flips = np.random.default_rng([self.cfg.seed, epoch, self.rank])
        loss_sum, seen, failed = 0.0, 0, 0
        started = time.monotonic()
        for step, (pixels, targets, bad) in enumerate(self._loaded(self.job.train, batches)):
            failed += bad
            ready = torch.tensor([len(pixels)])
            torch.distributed.all_reduce(ready, op=torch.distributed.ReduceOp.MIN)
            if int(ready) == 0:  # a rank lost its whole batch: every rank skips the step together
                continue
            if self.cfg.hflip:
                flip = flips.random(len(pixels)) < 0.5
                pixels[flip] = pixels[flip, :, ::-1]
            x = self.images.to_input(pixels)
            y = torch.as_tensor(targets, device=self.device)
            with self.autocast():
                out = self.ddp(x).float()
            if self.job.task == "classification":
                loss = nnf.cross_entropy(out, y.long())
            else:
                loss = nnf.mse_loss(out[:, 0], ((y - self.job.target_mean) / self.job.target_std).float())
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            self.schedule.step()
            loss_sum += float(loss.detach()) * len(pixels)
            seen += len(pixels)
            if step == 0:
                faults.die_once(faults.KILL_FINETUNE)  # test hook: a no-op unless its variable is set
        return loss_sum, seen, failed, time.monotonic() - started

    def _loaded(
        self, pairs: Sequence[tuple[str, float]], batches: list[np.ndarray]
    ) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """(uint8 pixels, targets, failed loads) per batch; the next batch loads while this one trains."""

        def submit(batch: np.ndarray) -> list[tuple[float, Future]]:
            return [
                (pairs[i][1], self.pool.submit(prepare_path, pairs[i][0], self.images, self.cfg.read.max_pixels))
                for i in batch
            ]

        size = self.job.spec.input_size
        pending = submit(batches[0]) if batches else []
        for k in range(len(batches)):
            current, pending = pending, (submit(batches[k + 1]) if k + 1 < len(batches) else [])
            loaded = [(t, f.result()) for t, f in current]
            good = [(t, item.pixels) for t, item in loaded if item.pixels is not None]
            pixels = np.stack([p for _, p in good]) if good else np.zeros((0, size, size, 3), np.uint8)
            yield pixels, np.array([t for t, _ in good]), len(loaded) - len(good)

    def _validate(self) -> tuple[dict[str, float], int]:
        """Metrics of the network + head on the whole validation split (sharded, then gathered)."""
        import torch

        pairs = self.job.validation
        mine = np.arange(self.rank, len(pairs), self.world)
        batches = [mine[i : i + self.cfg.batch_size] for i in range(0, len(mine), self.cfg.batch_size)]
        outputs, targets, failed = [], [], 0
        self.model.eval()
        with torch.inference_mode():
            for pixels, batch_targets, bad in self._loaded(pairs, batches):
                failed += bad
                if len(pixels):
                    with self.autocast():
                        outputs.append(self.model(self.images.to_input(pixels)).float().cpu().numpy())
                    targets.append(batch_targets)
        gathered: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(gathered, (outputs, targets, failed))
        out = np.concatenate([o for g in gathered for o in g[0]])
        y = np.concatenate([t for g in gathered for t in g[1]])
        return head_metrics(self.job, out, y), sum(g[2] for g in gathered)


def head_metrics(job: Job, outputs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Metrics of the head's raw outputs against targets (class indices or values)."""
    if job.task == "regression":
        return regression_metrics(y, outputs[:, 0] * job.target_std + job.target_mean)
    logits = outputs - outputs.max(axis=1, keepdims=True)
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return classification_metrics(y.astype(int), proba, len(job.classes))


def shard(n: int, rank: int, world: int, seed: int) -> np.ndarray:
    """This rank's indices of a seeded permutation of n, padded (by wrapping) so every
    rank gets ceil(n / world) of them, as torch's DistributedSampler: DDP needs every
    rank to take the same number of steps."""
    order = np.random.default_rng(seed).permutation(n)
    per_rank = math.ceil(n / world)
    padded = np.concatenate([order, order[: per_rank * world - n]])
    return padded[rank::world]


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, span) / span))


def _saved(state: dict) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, buffer)
    return buffer.getvalue()
