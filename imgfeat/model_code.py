"""The code file MLflow logs as the image model ("models from code", MLflow 3).

MLflow runs this file to build the model when it is loaded, then hands the
model's artifact files to `ImageModel.load_context`; nothing is unpickled.
Must not: do anything but name the model class (it runs in every process
that loads the model: a serving worker, a Spark executor, a notebook).
"""

import mlflow

from imgfeat.model import ImageModel

mlflow.models.set_model(ImageModel())
