"""Per-featurizer CPU cost on this machine: ms of CPU per image, one torch thread.

    .venv/bin/python bench/featurizer_speed.py [--batch 8] [--repeats 3] [names ...]

CPU time (not wall time) of `embed` on a batch of real-photo crops with random
weights (the cost does not depend on the weights), so the figures hold even
when other work shares the machine. Prints a Markdown table for README.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from imgfeat.featurizers import list_featurizers, load_featurizer, resolve_featurizer


def cpu_ms_per_image(name: str, batch: int, repeats: int) -> tuple[float, int, int]:
    spec = resolve_featurizer(name, weights="random" if name != "grayscale16" else "default")
    model = load_featurizer(spec)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (batch, spec.input_size, spec.input_size, 3), dtype=np.uint8)
    model.embed(pixels)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        model.embed(pixels)
        best = min(best, time.process_time() - start)
    return 1000 * best / batch, spec.dim, spec.input_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.names or [info.name for info in list_featurizers()]
    print("| featurizer | dim | input | CPU ms / image (1 thread) |")
    print("|---|---|---|---|")
    for name in names:
        ms, dim, size = cpu_ms_per_image(name, args.batch, args.repeats)
        print(f"| {name} | {dim} | {size} | {ms:.1f} |", flush=True)


if __name__ == "__main__":
    main()
