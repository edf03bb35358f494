"""Insights: the tables a person needs to trust an image model, computed from data.

Owns (cleanvision's shape: each computation scores rows and returns a table;
`imgfeat.report` only renders them): the deterministic sample's (`dataset.sample`) 2-D
projection, the model's predictions on its own table, outliers (distance to
the k nearest sampled images), three kinds of duplicate pairs kept apart
(`duplicate_pairs`: exact copies by content hash, near-copies by perceptual
hash via `imgfeat.nearcopy`, semantic look-alikes by random-hyperplane
blocking + exact cosine, in Spark: no embedding is collected), errors by
class, novelty of the test split against the model's reference, and
thumbnails (made on the workers). Must not: render HTML, log to MLflow, or
resolve models (`runs.insights_run` orchestrates).

Geometry: `novelty.unit_rows` (each featurizer's block normalized; the dot
product of two rows is their mean cosine similarity).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from imgfeat import nearcopy
from imgfeat.dataset import sample, with_features
from imgfeat.decode import decode_image
from imgfeat.features import FeatureSpec
from imgfeat.novelty import unit_rows
from imgfeat.sources import read_bytes

_UNIT = T.StructType([T.StructField("path", T.StringType()), T.StructField("unit", T.ArrayType(T.FloatType()))])


# ------------------------------------------------------------------ rows and sample
def with_units(rows: DataFrame, embedding_cols: Sequence[str]) -> DataFrame:
    """(path, unit): each row's embeddings as one unit vector (`novelty.unit_rows`)."""
    cols = list(embedding_cols)

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if batch.empty:
                continue
            units = unit_rows([np.stack(batch[c].to_numpy()) for c in cols])
            yield pd.DataFrame({"path": batch["path"], "unit": list(units)})

    return rows.select("path", *cols).mapInPandas(run, _UNIT)


def with_predictions(
    rows: DataFrame, features: FeatureSpec, booster_raw: bytes, embedding_cols: Sequence[str]
) -> DataFrame:
    """`rows` + `predicted` (class index), `confidence` (its probability), `probabilities`."""
    assembled = with_features(rows, features, embedding_cols)
    schema = T.StructType(
        [f for f in assembled.schema.fields if f.name != "features"]
        + [
            T.StructField("predicted", T.IntegerType()),
            T.StructField("confidence", T.DoubleType()),
            T.StructField("probabilities", T.ArrayType(T.DoubleType())),
        ]
    )
    raw = bytes(booster_raw)

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import xgboost

        booster = xgboost.Booster(model_file=bytearray(raw))
        for batch in batches:
            if batch.empty:
                continue
            proba = booster.predict(xgboost.DMatrix(np.stack(batch.pop("features").to_numpy()), missing=np.nan))
            proba = proba if proba.ndim == 2 else np.stack([1.0 - proba, proba], axis=1)
            index = proba.argmax(axis=1)
            batch["predicted"] = index.astype(np.int32)
            batch["confidence"] = proba[np.arange(len(index)), index].astype(np.float64)
            batch["probabilities"] = list(proba.astype(np.float64))
            yield batch

    return assembled.mapInPandas(run, schema)


# ------------------------------------------------------------------------ projection
def project(vectors: np.ndarray, method: str, seed: int) -> np.ndarray:
    """(n, 2) coordinates of unit `vectors`: UMAP or PCA (repeatable for a seed) or TriMap
    (its triplets are sampled in parallel numba threads: not bit-repeatable)."""
    n = len(vectors)
    if method == "pca" or n < 8:
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(vectors).astype(np.float32)
    if method == "umap":
        import umap

        model = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed, metric="euclidean")
        return model.fit_transform(vectors).astype(np.float32)
    import trimap

    inliers = max(2, min(12, n // 4))
    model = trimap.TRIMAP(n_dims=2, n_inliers=inliers, n_outliers=max(1, min(4, n // 8)), n_random=3, verbose=False)
    return np.asarray(model.fit_transform(vectors), dtype=np.float32)


# --------------------------------------------------------------------------- outliers
def nearest_distances(
    units: DataFrame, reference: np.ndarray, reference_paths: Sequence[str] | None, k: int
) -> DataFrame:
    """(path, distances): each row's k smallest distances to `reference` rows (unit
    vectors, broadcast), skipping the reference row with the same path."""
    spark = units.sparkSession
    shipped = spark.sparkContext.broadcast(np.ascontiguousarray(reference, dtype=np.float32))
    index = {p: i for i, p in enumerate(reference_paths or ())}
    k = min(k, len(reference) - (1 if index else 0))

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        ref = shipped.value
        for batch in batches:
            if batch.empty:
                continue
            sq = np.maximum(2.0 - 2.0 * (np.stack(batch["unit"].to_numpy()) @ ref.T), 0.0)
            for row, path in enumerate(batch["path"]):
                if path in index:
                    sq[row, index[path]] = np.inf
            nearest = np.sort(np.partition(sq, k - 1, axis=1)[:, :k], axis=1)
            yield pd.DataFrame({"path": batch["path"], "distances": list(np.sqrt(nearest).astype(np.float32))})

    schema = T.StructType(
        [T.StructField("path", T.StringType()), T.StructField("distances", T.ArrayType(T.FloatType()))]
    )
    return units.mapInPandas(run, schema)


@dataclass(frozen=True)
class Outliers:
    top: pd.DataFrame  # path, score, z: the farthest first
    count: int  # rows with z above the threshold
    k: int
    z_threshold: float
    median: float
    mad: float


def outliers(
    units: DataFrame, reference: np.ndarray, reference_paths: Sequence[str], k: int, z: float, show: int
) -> Outliers:
    """Score every row by its mean distance to its k nearest sampled images; flag a
    modified z-score (0.6745 (score - median) / MAD, Iglewicz & Hoaglin) above `z`."""
    scored = (
        nearest_distances(units, reference, reference_paths, k)
        .select("path", F.aggregate("distances", F.lit(0.0), lambda a, x: a + x) / F.size("distances"))
        .toDF("path", "score")
        .cache()
    )
    try:
        median = _scalar(scored.select(F.percentile_approx("score", 0.5, 10_000)))
        mad = _scalar(scored.select(F.percentile_approx(F.abs(F.col("score") - median), 0.5, 10_000)))
        zcol = F.lit(0.6745) * (F.col("score") - median) / F.lit(max(mad, 1e-9))
        with_z = scored.withColumn("z", zcol)
        count = with_z.where(F.col("z") > z).count()
        top = with_z.orderBy(F.desc("score"), "path").limit(show).toPandas()
    finally:
        scored.unpersist()
    return Outliers(top, int(count), k, z, median, mad)


# -------------------------------------------------------------------- near-duplicates
def near_duplicates(units: DataFrame, threshold: float, bits: int, tables: int, seed: int) -> DataFrame:
    """(path_a, path_b, cosine) of every pair with cosine >= `threshold` that shares a block.

    Blocking: `tables` keys per image, each the signs of `bits` random hyperplanes
    through the mean vector (SimHash of the centred vector); pairs sharing any
    key are compared exactly. A pair at cosine c shares one key with probability
    (1 - angle/pi)^bits, and is missed with probability (1 - that)^tables
    (docs/insights.md). Only paths and the pair's two vectors move; nothing is
    collected but one mean vector.
    """
    mean = _mean(units)
    planes = np.random.default_rng(seed).standard_normal((tables * bits, len(mean))).astype(np.float32)
    weights = (np.int64(1) << np.arange(bits, dtype=np.int64)).astype(np.int64)

    def keys(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if batch.empty:
                continue
            centred = np.stack(batch["unit"].to_numpy()) - mean
            signs = (centred @ planes.T > 0).reshape(len(batch), tables, bits).astype(np.int64)
            yield pd.DataFrame(
                {
                    "path": np.repeat(batch["path"].to_numpy(), tables),
                    "band": np.tile(np.arange(tables, dtype=np.int32), len(batch)),
                    "key": (signs @ weights).ravel(),
                }
            )

    blocks = units.mapInPandas(keys, "path string, band int, key long")
    a, b = blocks.alias("a"), blocks.alias("b")
    candidates = (
        a.join(b, (F.col("a.band") == F.col("b.band")) & (F.col("a.key") == F.col("b.key")))
        .where(F.col("a.path") < F.col("b.path"))
        .select(F.col("a.path").alias("path_a"), F.col("b.path").alias("path_b"))
        .distinct()
    )
    left = units.select(F.col("path").alias("path_a"), F.col("unit").alias("unit_a"))
    right = units.select(F.col("path").alias("path_b"), F.col("unit").alias("unit_b"))

    def cosine(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if batch.empty:
                continue
            dots = np.einsum("ij,ij->i", np.stack(batch["unit_a"].to_numpy()), np.stack(batch["unit_b"].to_numpy()))
            yield pd.DataFrame(
                {"path_a": batch["path_a"], "path_b": batch["path_b"], "cosine": dots.astype(np.float64)}
            )

    pairs = candidates.join(left, "path_a").join(right, "path_b").select("path_a", "path_b", "unit_a", "unit_b")
    return pairs.mapInPandas(cosine, "path_a string, path_b string, cosine double").where(F.col("cosine") >= threshold)


def _mean(units: DataFrame) -> np.ndarray:
    """The mean unit vector, from per-batch sums (a few rows reach the driver)."""

    def sums(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if not batch.empty:
                yield pd.DataFrame(
                    {"n": [len(batch)], "total": [np.stack(batch["unit"].to_numpy()).sum(axis=0, dtype=np.float64)]}
                )

    parts = units.mapInPandas(sums, "n long, total array<double>").collect()
    n = sum(r["n"] for r in parts)
    return (np.sum([r["total"] for r in parts], axis=0) / max(n, 1)).astype(np.float32)


@dataclass(frozen=True)
class Pairs:
    """One kind of duplicate pairs: how many, how many straddle test, how many disagree on labels,
    and the pairs shown (path_a, path_b, the kind's score column, split_a/b, label_a/b, leak, noise)."""

    count: int
    leaking: int
    label_noise: int
    shown: pd.DataFrame


#: Kinds of duplicate pairs, in the report's order → (title, score column, is higher closer).
PAIR_KINDS = {
    "exact_copies": ("Exact copies (same bytes)", "distance", False),
    "near_copies": ("Near-copies (perceptual hash)", "distance", False),
    "lookalikes": ("Semantic look-alikes (embedding cosine)", "cosine", True),
}


def duplicate_pairs(rows: DataFrame, units: DataFrame, cfg: Any, distance: int) -> dict[str, Pairs]:
    """The three kinds of `PAIR_KINDS`, each pair in one kind only: byte-identical pairs; other
    pairs with perceptual hashes within `distance` bits; other pairs at embedding cosine >=
    `cfg.near_duplicates.threshold` (`near_duplicates`). `rows`: path, content_sha256, phash,
    split, label; `cfg`: the `InsightsConfig`."""
    nd, key = cfg.near_duplicates, ["path_a", "path_b"]
    exact = nearcopy.exact_pairs(rows, "path").withColumn("distance", F.lit(0)).cache()
    near = nearcopy.near_pairs(rows, "path", distance).join(exact, key, "left_anti").cache()
    cosine = near_duplicates(units, nd.threshold, nd.bits, nd.tables, cfg.seed)
    copies = exact.select(*key).union(near.select(*key))
    found = {"exact_copies": exact, "near_copies": near, "lookalikes": cosine.join(copies, key, "left_anti")}
    try:
        return {kind: _summarise(classify_pairs(found[kind], rows), kind, nd.show) for kind in PAIR_KINDS}
    finally:
        exact.unpersist()
        near.unpersist()


def _summarise(pairs: DataFrame, kind: str, show: int) -> Pairs:
    """Counts of one kind's pairs, and the `show` most telling (leaks, then label noise, then closest)."""
    score, higher = PAIR_KINDS[kind][1:]
    pairs = pairs.cache()
    try:
        counts = pairs.agg(
            F.count(F.lit(1)), F.sum(F.col("leak").cast("int")), F.sum(F.col("noise").cast("int"))
        ).first()
        assert counts is not None  # a global aggregate has one row
        closest = F.desc(score) if higher else F.asc(score)
        shown = pairs.orderBy(F.desc("leak"), F.desc("noise"), closest, "path_a", "path_b").limit(show).toPandas()
    finally:
        pairs.unpersist()
    return Pairs(int(counts[0]), int(counts[1] or 0), int(counts[2] or 0), shown)


def classify_pairs(pairs: DataFrame, rows: DataFrame) -> DataFrame:
    """`pairs` + split and label of each side, `leak` (one side in test, the other not)
    and `noise` (different labels)."""
    side = rows.select("path", "split", "label")
    out = pairs.join(side.toDF("path_a", "split_a", "label_a"), "path_a").join(
        side.toDF("path_b", "split_b", "label_b"), "path_b"
    )
    test_a, test_b = F.col("split_a") == "test", F.col("split_b") == "test"
    return out.withColumn("leak", test_a != test_b).withColumn(
        "noise", F.col("label_a").cast("string") != F.col("label_b").cast("string")
    )


# ------------------------------------------------------------------------------ errors
def confusion(test: pd.DataFrame, n_classes: int) -> np.ndarray:
    """(true, predicted) counts of the test rows (`label_index`, `predicted`)."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (test["label_index"].astype(int).to_numpy(), test["predicted"].astype(int).to_numpy()), 1)
    return matrix


def confident_errors(predicted: DataFrame, per_class: int) -> pd.DataFrame:
    """The `per_class` most confident wrong test predictions of each true class."""
    from pyspark.sql import Window

    wrong = predicted.where((F.col("split") == "test") & (F.col("predicted") != F.col("label_index").cast("int")))
    rank = F.row_number().over(Window.partitionBy("label_index").orderBy(F.desc("confidence"), "path"))
    keep = wrong.withColumn("rank", rank).where(F.col("rank") <= per_class)
    return (
        keep.select("path", "label", "label_index", "predicted", "confidence", "rank")
        .orderBy("label_index", "rank")
        .toPandas()
    )


# --------------------------------------------------------------------------- novelty
def novelty_histogram(units: DataFrame, reference: Any, threshold: float, bins: int = 20) -> tuple[np.ndarray, int]:
    """Counts of `units` rows per novelty bin (0..100 in `bins` steps) against a
    `NoveltyReference`, and the rows at or above `threshold`."""
    nearest = nearest_distances(units, reference.vectors, None, 1)
    sorted_nn = units.sparkSession.sparkContext.broadcast(reference.nn_distances)

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        ref = sorted_nn.value
        for batch in batches:
            d = np.array([v[0] for v in batch["distances"]], dtype=np.float32)
            yield pd.DataFrame({"novelty": 100.0 * np.searchsorted(ref, d, side="left") / len(ref)})

    scored = nearest.mapInPandas(run, "novelty double").cache()
    try:
        step = 100.0 / bins
        counts: dict[int, int] = dict(
            scored.groupBy(F.least(F.floor(F.col("novelty") / step), F.lit(bins - 1)).cast("int")).count().collect()
        )
        above = scored.where(F.col("novelty") >= threshold).count()
    finally:
        scored.unpersist()
    return np.array([counts.get(i, 0) for i in range(bins)], dtype=np.int64), int(above)


# ------------------------------------------------------------------------ thumbnails
def thumbnails(rows: DataFrame, px: int) -> dict[str, str]:
    """path → JPEG data URI (longest side `px`), made on the workers; a file that no
    longer decodes maps to an empty string."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield pd.DataFrame({"path": batch["path"], "uri": [thumbnail_uri(p, px) for p in batch["path"]]})

    frame = rows.select("path").distinct()
    return {r["path"]: r["uri"] for r in frame.mapInPandas(run, "path string, uri string").collect()}


def thumbnail_uri(path: str, px: int) -> str:
    try:
        decoded = decode_image(read_bytes(path), draft_size=px)
    except OSError:
        return ""
    if decoded.image is None:
        return ""
    return image_uri(decoded.image, px)


def image_uri(image: Any, px: int, quality: int = 82) -> str:
    """A PIL image, shrunk to `px` on its longest side, as a JPEG data URI."""
    image = image.convert("RGB")
    image.thumbnail((px, px))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


# --------------------------------------------------------------------- the whole set
@dataclass
class ActivationMap:
    path: str
    label: str
    predicted: str
    confidence: float
    image: np.ndarray  # (S, S, 3) uint8: what the network saw
    heat: np.ndarray  # (S, S) float in [0, 1]


@dataclass
class Insights:
    """Everything the report shows, as data."""

    about: dict[str, str]  # model, version, featurizers, table, version, train run, ...
    counts: dict[str, int]  # table rows of the model's featurizer(s) by status
    bad: pd.DataFrame  # path, status, error (at most `BAD_LISTED`)
    classes: tuple[str, ...]
    points: pd.DataFrame  # path, x, y, label, split, predicted_class, confidence, wrong
    outliers: Outliers
    pairs: dict[str, Pairs]  # by kind (`PAIR_KINDS`): exact copies, near-copies, semantic look-alikes
    confusion: np.ndarray
    errors: pd.DataFrame
    maps: list[ActivationMap]
    maps_note: str | None  # why there are no maps, if there are none
    novelty_hist: np.ndarray | None  # test rows per 5-point novelty bin; None without a reference
    novel: int | None
    novelty_threshold: float
    thumbs: dict[str, str]
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        total = self.confusion.sum()
        return float(np.trace(self.confusion) / total) if total else float("nan")


BAD_LISTED = 200


def analyse(
    rows: DataFrame,
    statuses: DataFrame,
    features: FeatureSpec,
    model: Any,  # scoring.ImageModel: booster, featurizers, novelty
    cfg: Any,  # config.InsightsConfig
    n_sample: int,
    about: dict[str, str],
    trunk: Callable[[], Any] | None = None,
    near_copy_distance: int = 8,
) -> Insights:
    """Compute every section from `rows` (`dataset.read_labeled`) and `statuses`
    (path, status, error of the same featurizer(s), bad rows included); `trunk`
    builds the first featurizer's torch network when the model scores without
    it (an ONNX graph), for the activation maps; `near_copy_distance`: the
    model's `split.near_copy_distance`, so the report's near-copies are the split's."""
    emb = [f"emb_{i}" for i in range(len(features.featurizers))]
    classes = features.classes
    counts = {r["status"]: int(r["count"]) for r in statuses.groupBy("status").count().collect()}
    bad = (
        statuses.where(F.col("status") != "ok")
        .select("path", "status", "error")
        .orderBy("path")
        .limit(BAD_LISTED)
        .toPandas()
    )

    predicted = with_predictions(rows, features, model.booster.save_raw("ubj"), emb).cache()
    units = with_units(predicted, emb).cache()
    try:
        picked: pd.DataFrame = (
            sample(predicted, n_sample, cfg.seed)
            .select("path", "label", "split", "label_index", "predicted", "confidence")
            .join(units, "path")
            .orderBy("path")
            .toPandas()
        )
        vectors = np.stack(picked.pop("unit").to_numpy()).astype(np.float32)
        xy = project(vectors, cfg.projection, cfg.seed)
        points = picked.assign(
            x=xy[:, 0],
            y=xy[:, 1],
            predicted_class=[classes[k] for k in picked["predicted"]],
            wrong=(picked["split"] == "test") & (picked["predicted"] != picked["label_index"].astype(int)),
        )
        out = outliers(units, vectors, list(points["path"]), cfg.outliers.k, cfg.outliers.z, cfg.outliers.show)
        pairs = duplicate_pairs(predicted, units, cfg, near_copy_distance)
        test = predicted.where(F.col("split") == "test").select("label_index", "predicted").toPandas()
        errors = confident_errors(predicted, cfg.errors_per_class)
        maps, maps_note = activation_maps(predicted, features, model, cfg.activation_maps, trunk)
        hist, novel = (None, None)
        if model.novelty is not None:
            hist, novel = novelty_histogram(
                units.join(predicted.where(F.col("split") == "test").select("path"), "path"),
                model.novelty,
                cfg.novelty_threshold,
            )
        wanted = (
            set(points["path"])
            | set(out.top["path"])
            | {p for kind in pairs.values() for p in (*kind.shown["path_a"], *kind.shown["path_b"])}
            | set(errors["path"])
        )
        thumbs = thumbnails(predicted.where(F.col("path").isin(sorted(wanted))), cfg.thumbnail_px) if wanted else {}
    finally:
        units.unpersist()
        predicted.unpersist()
    return Insights(
        about=about,
        counts=counts,
        bad=bad,
        classes=classes,
        points=points,
        outliers=out,
        pairs=pairs,
        confusion=confusion(test, len(classes)),
        errors=errors,
        maps=maps,
        maps_note=maps_note,
        novelty_hist=hist,
        novel=novel,
        novelty_threshold=cfg.novelty_threshold,
        thumbs=thumbs,
    )


def activation_maps(
    predicted: DataFrame, features: FeatureSpec, model: Any, per_class: int, trunk: Callable[[], Any] | None = None
) -> tuple[list[ActivationMap], str | None]:
    """Maps for the `per_class` most confident right and wrong test images of each class,
    through the model's first featurizer, or (when that is no torch CNN, e.g. an ONNX
    graph) through the torch network `trunk()` builds, if it gives the same embeddings."""
    from pyspark.sql import Window

    from imgfeat.activation import AGREEMENT, ShapCAM, agreement, unsupported

    if per_class == 0:
        return [], "activation_maps: 0 in the config"
    scoring = mapped = model.featurizers[0]
    why = unsupported(scoring)
    if why and trunk is not None and scoring.spec.projection is None:
        try:
            mapped = trunk()
        except Exception as exc:  # no torch here, weights unreadable: the rest of the report stands
            return [], f"no activation maps: cannot build the torch network of {scoring.spec.name} ({exc})"
        why = unsupported(mapped)
    if why:
        return [], f"no activation maps: {why}"
    right = F.col("predicted") == F.col("label_index").cast("int")
    rank = F.row_number().over(Window.partitionBy("label_index", right).orderBy(F.desc("confidence"), "path"))
    emb = [f"emb_{i}" for i in range(len(features.featurizers))]
    chosen: pd.DataFrame = (
        predicted.where(F.col("split") == "test")
        .withColumn("rank", rank)
        .where(F.col("rank") <= per_class)
        .select("path", "label", "label_index", "predicted", "confidence", *emb, *features.columns)
        .orderBy("label_index", F.desc("confidence"))
        .toPandas()
    )
    if chosen.empty:
        return [], "no test images"
    images, keep = [], []
    for i, path in enumerate(chosen["path"]):
        decoded = decode_image(read_bytes(path), draft_size=scoring.spec.resize_size)
        if decoded.image is not None:
            images.append(scoring.prepare(decoded.image))
            keep.append(i)
    chosen = chosen.iloc[keep].reset_index(drop=True)
    if chosen.empty:
        return [], "the chosen test images no longer decode"
    x = features.assemble([np.stack(chosen[c].to_numpy()) for c in emb], chosen)
    batch = np.stack(images)
    if mapped is not scoring:
        least = agreement(mapped, scoring, batch)
        if not least > AGREEMENT:
            return [], (
                f"no activation maps: the torch network of {scoring.spec.name} does not give the embeddings the "
                f"model scores with (least cosine {least:.5f} on the mapped images, {AGREEMENT} needed)"
            )
    heat = ShapCAM(mapped, model.booster, features)(batch, x, chosen["predicted"].to_numpy())
    return [
        ActivationMap(r.path, str(r.label), features.classes[int(r.predicted)], float(r.confidence), batch[i], heat[i])
        for i, r in enumerate(chosen.itertuples())
    ], None


def _scalar(frame: DataFrame) -> float:
    """The one value of a global aggregate (it always has exactly one row)."""
    row = frame.first()
    assert row is not None
    return float(row[0])
