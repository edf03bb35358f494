"""Perceptual-hash distances of planted copies against distinct photos: the default threshold.

    PYTHONPATH=. .venv/bin/python bench/phash_thresholds.py [--per-class 15] [--originals 30]

Writes the project's labeled sample photos (`imgfeat.dev.samples`, every class, `per-class`
each: tiles of one photo per class, so distinct photos of a class look alike), plants each
copy kind of `imgfeat.dev.copies` of `originals` of them, and hashes every file as
featurize does (`decode_image` with efficientnet_lite0's draft size, then
`perceptual_hash`). Prints the distance of each kind of copy to its original (max), the
distances between distinct photos (min, percentiles), and per threshold d: planted
copies within d (recall) and distinct pairs within d (false near-copies).
"""

from __future__ import annotations

import argparse
import io
import itertools
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from imgfeat.decode import decode_image, perceptual_hash
from imgfeat.dev.copies import KINDS, planted_copy
from imgfeat.dev.samples import LABELED_CLASSES, write_labeled_photos
from imgfeat.nearcopy import hamming

DRAFT = 256  # efficientnet_lite0's resize size: featurize decodes JPEGs at least this large


def file_hash(data: bytes) -> int:
    """The hash featurize stores for a file's bytes."""
    decoded = decode_image(data, draft_size=DRAFT)
    assert decoded.image is not None
    return perceptual_hash(decoded.image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=15)
    parser.add_argument("--originals", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_labeled_photos(Path(tmp), classes=sorted(LABELED_CLASSES), per_class=args.per_class)
        files = sorted(Path(tmp).glob("*/*.jpg"))
        hashes = [file_hash(f.read_bytes()) for f in files]
        copies: dict[str, list[int]] = {k: [] for k in KINDS}
        step = max(1, len(files) // args.originals)
        for i in range(0, len(files), step)[: args.originals]:
            original = Image.open(files[i]).convert("RGB")
            for kind in KINDS:
                buf = io.BytesIO()
                planted_copy(original, kind).save(buf, format="JPEG", quality=90)
                copies[kind].append(hamming(hashes[i], file_hash(buf.getvalue())))
    distinct = np.array([hamming(a, b) for a, b in itertools.combinations(hashes, 2)])
    print(
        f"{len(files)} distinct photos ({len(LABELED_CLASSES)} classes), {len(distinct)} pairs; "
        f"{args.originals} originals x {len(KINDS)} copy kinds"
    )
    print("| copy kind | max distance to its original | mean |")
    print("|---|---|---|")
    for kind, d in copies.items():
        print(f"| {kind} | {max(d)} | {np.mean(d):.1f} |")
    p1, p5 = np.percentile(distinct, [1, 5])
    print(
        f"distinct pairs: min {distinct.min()}, 1st percentile {p1:.0f}, 5th percentile {p5:.0f}, median "
        f"{np.median(distinct):.0f}"
    )
    planted = np.array([d for ds in copies.values() for d in ds])
    print("| threshold d | planted copies within d | distinct pairs within d |")
    print("|---|---|---|")
    for d in range(0, 17, 2):
        print(f"| {d} | {np.mean(planted <= d):.1%} | {int(np.sum(distinct <= d))} |")


if __name__ == "__main__":
    main()
