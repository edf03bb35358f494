"""ImageFeaturizer as a pyspark.ml Transformer: in a Pipeline, saved and loaded."""

from __future__ import annotations

import numpy as np
from pyspark.ml import Pipeline, PipelineModel

from imgfeat.decode import decode_image
from imgfeat.featurizers import load_featurizer, resolve_featurizer
from imgfeat.transformer import ImageFeaturizer


def test_pipeline_transform_save_load(spark, photos, tmp_path):
    images = spark.read.format("binaryFile").load(str(photos)).select("path", "content")
    images = images.union(spark.createDataFrame([("bad.jpg", b"not an image")], images.schema))
    feat = ImageFeaturizer(inputCol="content", outputCol="emb", featurizer="efficientnet_lite0", batchSize=4)
    model = Pipeline(stages=[feat]).fit(images)
    model.write().overwrite().save(str(tmp_path / "pipe"))
    loaded = PipelineModel.load(str(tmp_path / "pipe"))
    stage = loaded.stages[0]
    assert isinstance(stage, ImageFeaturizer)
    assert stage.getOutputCol() == "emb" and stage.getOrDefault(stage.batchSize) == 4

    rows = {r["path"]: r for r in loaded.transform(images).collect()}
    assert len(rows) == images.count()
    bad = rows["bad.jpg"]
    assert bad["emb"] is None and bad["status"] == "decode_error" and bad["error"]

    spec = resolve_featurizer("efficientnet_lite0")
    ref_model = load_featurizer(spec)
    path, row = next((p, r) for p, r in rows.items() if p.endswith("chelsea.jpg"))
    decoded = decode_image(row["content"], draft_size=spec.resize_size)
    ref = ref_model.embed(ref_model.prepare(decoded.image)[None])[0]
    np.testing.assert_allclose(np.asarray(row["emb"], np.float32), ref, atol=1e-4, rtol=0)
    assert row["status"] == "ok"
