"""`ImageFeaturizer`: the featurizer as a pyspark.ml Transformer.

Owns: the Params surface (typed, documented, saved and loaded with the
pipeline) over the same worker code the featurize job uses. Must not: list
files or write tables — it maps a column of image bytes to an embedding
column, lazily, like any Transformer.

    ImageFeaturizer(inputCol="content", outputCol="embedding",
                    featurizer="efficientnet_lite0").transform(binary_file_df)

Bad images do not fail the job: their embedding is null and `statusCol` /
`errorCol` say why.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from imgfeat.featurize import WorkerOptions, cached_featurizer, pick_device, pipelined, prepare_bytes
from imgfeat.featurizers import FeaturizerSpec, resolve_featurizer


class ImageFeaturizer(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """Image bytes column → `array<float>` embedding column (+ status, error)."""

    featurizer = Param(
        Params._dummy(), "featurizer", "registry name, e.g. efficientnet_lite0", typeConverter=TypeConverters.toString
    )
    weights = Param(
        Params._dummy(),
        "weights",
        "default | hub | random | checkpoint path/URI",
        typeConverter=TypeConverters.toString,
    )
    pooling = Param(Params._dummy(), "pooling", "avg | max | avgmax | gem", typeConverter=TypeConverters.toString)
    batchSize = Param(Params._dummy(), "batchSize", "images per forward pass", typeConverter=TypeConverters.toInt)
    device = Param(Params._dummy(), "device", "auto | cpu | cuda", typeConverter=TypeConverters.toString)
    maxPixels = Param(
        Params._dummy(), "maxPixels", "decompression-bomb guard (pixels)", typeConverter=TypeConverters.toInt
    )
    statusCol = Param(
        Params._dummy(), "statusCol", "output column for the row status", typeConverter=TypeConverters.toString
    )
    errorCol = Param(
        Params._dummy(), "errorCol", "output column for the error message", typeConverter=TypeConverters.toString
    )

    @keyword_only
    def __init__(
        self,
        *,
        inputCol: str = "content",
        outputCol: str = "embedding",
        featurizer: str = "efficientnet_lite0",
        weights: str = "default",
        pooling: str = "avg",
        batchSize: int = 32,
        device: str = "auto",
        maxPixels: int = 100_000_000,
        statusCol: str = "status",
        errorCol: str = "error",
    ) -> None:
        super().__init__()
        self._setDefault(
            inputCol="content",
            outputCol="embedding",
            featurizer="efficientnet_lite0",
            weights="default",
            pooling="avg",
            batchSize=32,
            device="auto",
            maxPixels=100_000_000,
            statusCol="status",
            errorCol="error",
        )
        self._set(**self._input_kwargs)  # type: ignore[attr-defined]  # set by pyspark's @keyword_only

    def spec(self) -> FeaturizerSpec:
        """The resolved featurizer (validates name and weights on the driver)."""
        return resolve_featurizer(
            self.getOrDefault(self.featurizer),
            weights=self.getOrDefault(self.weights),
            pooling=self.getOrDefault(self.pooling),
        )

    def _transform(self, dataset: DataFrame) -> DataFrame:
        spec = self.spec()
        opts = WorkerOptions(
            batch_size=self.getOrDefault(self.batchSize),
            max_pixels=self.getOrDefault(self.maxPixels),
            device=self.getOrDefault(self.device),
        )
        in_col, out_col = self.getInputCol(), self.getOutputCol()
        status_col, error_col = self.getOrDefault(self.statusCol), self.getOrDefault(self.errorCol)
        schema = T.StructType(
            list(dataset.schema.fields)
            + [
                T.StructField(out_col, T.ArrayType(T.FloatType()), True),
                T.StructField(status_col, T.StringType(), True),
                T.StructField(error_col, T.StringType(), True),
            ]
        )

        def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            model = cached_featurizer(spec, pick_device(opts.device))
            for frame in batches:
                blobs = frame[in_col].tolist()
                jobs = ((len(b or b""), _bind_bytes(b, model, opts.max_pixels)) for b in blobs)
                start = 0
                for items, vectors in pipelined(jobs, model, opts):
                    part = frame.iloc[start : start + len(items)].copy()
                    start += len(items)
                    part[out_col] = vectors
                    part[status_col] = [i.status.value for i in items]
                    part[error_col] = [i.error for i in items]
                    yield part

        return dataset.mapInPandas(run, schema)


def _bind_bytes(blob: bytes | None, model, max_pixels: int):
    return lambda: prepare_bytes(blob or b"", model, max_pixels)
