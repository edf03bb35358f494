"""Near-copies: rows whose 64-bit perceptual hashes (`decode.perceptual_hash`) differ in few bits.

Owns: the banded search in Spark (`near_pairs`: each hash cut into bands; rows
sharing a band value are candidates; the exact Hamming distance, `bit_count`
of the xor, decides), byte-identical pairs (`exact_pairs`), and connected
components of pair edges (`components`). Must not: know featurizers, labels,
splits or MLflow; read or write tables (callers hand it frames with a key
column and `phash`).

Why bands: by pigeonhole, two hashes within Hamming distance d differ in at most
d of d + 1 disjoint bands, so they agree on one: every such pair is a candidate
(no pair is missed, unlike random-projection blocking). The cost is the candidates:
a band of w bits puts two unrelated hashes together with probability 2^-w, so
n rows give about (d + 1) n^2 / 2^(w + 1) candidate pairs: at the default d = 8
(`split.near_copy_distance`) the bands are 7-8 bits wide, about n^2 / 30 candidates
(3 x 10^8 at 100,000 images; not measured at that size). Larger sets want a smaller
distance (wider bands). Many identical hashes (blank frames) make one large bucket.
"""

from __future__ import annotations

from collections.abc import Iterable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

#: Bits in a perceptual hash.
HASH_BITS = 64
_MASK64 = (1 << HASH_BITS) - 1


def bands(distance: int) -> list[tuple[int, int]]:
    """(shift, width) of the `distance + 1` disjoint bands covering the 64 bits, widths within one."""
    count = min(distance + 1, HASH_BITS)
    widths = [HASH_BITS // count + (1 if i < HASH_BITS % count else 0) for i in range(count)]
    return [(sum(widths[:i]), w) for i, w in enumerate(widths)]


def hamming(a: int, b: int) -> int:
    """Bits in which two hashes (signed 64-bit ints, as the table stores them) differ."""
    return ((a ^ b) & _MASK64).bit_count()


def distance_column(a: Column, b: Column) -> Column:
    """Spark's Hamming distance of two bigint hash columns."""
    return F.bit_count(a.bitwiseXOR(b)).cast("int")


def near_pairs(rows: DataFrame, key: str, distance: int) -> DataFrame:
    """(`key`_a, `key`_b, distance) of every pair of distinct keys whose `phash` is within
    `distance` bits (`key`_a < `key`_b; each pair once). Rows without a hash take no part;
    a key seen with two hashes (none in practice: one key, one image) pairs by each."""
    hashed = rows.where(F.col("phash").isNotNull()).select(key, "phash").distinct()
    keyed = hashed.select(
        key,
        "phash",
        F.explode(
            F.array(
                *[
                    F.struct(F.lit(i).alias("band"), _band(F.col("phash"), shift, width).alias("value"))
                    for i, (shift, width) in enumerate(bands(distance))
                ]
            )
        ).alias("b"),
    ).select(key, "phash", "b.band", "b.value")
    a, b = keyed.alias("a"), keyed.alias("b")
    left, right = f"{key}_a", f"{key}_b"
    candidates = (
        a.join(b, (F.col("a.band") == F.col("b.band")) & (F.col("a.value") == F.col("b.value")))
        .where(F.col(f"a.{key}") < F.col(f"b.{key}"))
        .select(
            F.col(f"a.{key}").alias(left),
            F.col(f"b.{key}").alias(right),
            distance_column(F.col("a.phash"), F.col("b.phash")).alias("distance"),
        )
    )
    return candidates.where(F.col("distance") <= distance).groupBy(left, right).agg(F.min("distance").alias("distance"))


def _band(phash: Column, shift: int, width: int) -> Column:
    """Bits `shift .. shift + width - 1` (from the lowest) of a hash, as a non-negative long."""
    return F.shiftrightunsigned(phash, shift).bitwiseAND(F.lit((1 << width) - 1 if width < 64 else -1))


def exact_pairs(rows: DataFrame, key: str) -> DataFrame:
    """(`key`_a, `key`_b) of every pair of rows with the same `content_sha256` (byte-identical)."""
    side = rows.select(key, "content_sha256").distinct()
    a, b = side.alias("a"), side.alias("b")
    return (
        a.join(b, F.col("a.content_sha256") == F.col("b.content_sha256"))
        .where(F.col(f"a.{key}") < F.col(f"b.{key}"))
        .select(F.col(f"a.{key}").alias(f"{key}_a"), F.col(f"b.{key}").alias(f"{key}_b"))
    )


def components(edges: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Each node of `edges` → its connected component's smallest node (union-find on the driver).

    Why on the driver: near-copy edges are few (a handful per copied image, none for the
    rest), so even a million of them is a few hundred MB at most; keys not in any edge
    are their own component and never reach the driver.
    """
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: root(x) for x in parent}
