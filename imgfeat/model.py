"""The served model, in the manner of MLflow's flavor modules: save, log, load, predict.

Owns: `ImageModel`, the MLflow pyfunc that bundles the featurizer spec(s) and
weights with the booster and the `FeatureSpec` (input: image bytes in
`content`, or a `path` where the deployer allowed one, plus the model's
tabular columns; output: `prediction`, `predicted_class`, `probabilities`,
`novelty`, `status`, `error`); logging and registering it with only the code
scoring needs (`SERVED_CODE`); loading it back. Must not: import Spark jobs,
Delta, sessions, tracking, training or CV code, `xgboost.spark` or
`deltalake` (a serving process loads this module and nothing of those).

Classification follows Spark ML: `prediction` is the class index (a double)
into the model's classes, `predicted_class` its name. Regression:
`prediction` is the value; `predicted_class` and `probabilities` are null.
`novelty` (0..100, `imgfeat.novelty`) says how unlike the training images an
image is; null for a model logged without a novelty reference.

Two doors: `predict` is the pyfunc's (a server, `mlflow.pyfunc.load_model`):
it applies the serving policy (`imgfeat.served_input`: limits, paths off by
default, fixed messages). `score` is the batch score job's, run by the data's
owner over their own files: it reads paths with the reader it is given and
keeps full error text for the scores table.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd

from imgfeat.errors import InputError, Status
from imgfeat.features import FeatureSpec, predict_output
from imgfeat.featurizers import Featurizer, FeaturizerSpec, load_featurizer
from imgfeat.featurizers.featurizer import ProjectedFeaturizer, TorchFeaturizer
from imgfeat.featurizers.runtime import prefer_graph
from imgfeat.featurizers.weights import read_verified, source_kind
from imgfeat.inference import Prepared, WorkerOptions, cached_featurizer, pick_device, pipelined, prepare_bytes
from imgfeat.novelty import NoveltyReference
from imgfeat.served_input import NO_IMAGE, PATHS_OFF, Refused, ServingPolicy, served_message

if TYPE_CHECKING:
    from imgfeat.train import TrainResult

#: The file of this package logged as the model's code ("models from code"): it names `ImageModel`.
MODEL_CODE = "model_code.py"
#: Artifact names inside the logged model.
FEATURES_ARTIFACT, BOOSTER_ARTIFACT, NOVELTY_ARTIFACT = "features", "booster", "novelty"
OUTPUT_COLUMNS = ("prediction", "predicted_class", "probabilities", "novelty", "status", "error")
#: The package files a logged model carries (`code_paths`): what loading and scoring
#: import, and nothing else (no Spark jobs, tables, training, bench or demo code).
SERVED_CODE = (
    "__init__.py",
    MODEL_CODE,
    "model.py",
    "served_input.py",
    "features.py",
    "inference.py",
    "decode.py",
    "errors.py",
    "config.py",
    "config_load.py",
    "novelty.py",
    "featurizers",
)

#: Reads a `path` row's bytes; raises `Refused` or any exception for an unreadable one.
Reader = Callable[[str], bytes]


def _artifact(kind: str, i: int) -> str:
    return f"{kind}_{i}"


# ------------------------------------------------------------------------- the pyfunc
class ImageModel(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]  # mlflow.pyfunc is lazily typed
    """Raw image (bytes or path) + tabular columns → prediction, as an MLflow pyfunc.

    Every input row yields one output row; an image that cannot be read or
    decoded gets a status and an error instead of a prediction.
    """

    def load_context(self, context: Any) -> None:
        self.load(context.artifacts)

    def load(self, artifacts: Mapping[str, str], policy: ServingPolicy | None = None) -> None:
        """Build the booster and the featurizers from the model's artifact files;
        `policy` (default: `IMGFEAT_SERVING`'s, else the safe defaults) rules `predict`."""
        import xgboost

        self.policy = policy or ServingPolicy.from_env()
        self._started: dict[int, float] = {}  # predict calls in flight: id → monotonic start
        self._lock = threading.Lock()

        self.features = FeatureSpec.from_json(Path(artifacts[FEATURES_ARTIFACT]).read_text())
        self.booster = xgboost.Booster()
        self.booster.load_model(artifacts[BOOSTER_ARTIFACT])
        self.featurizers = [_load_bundled(spec, artifacts, i) for i, spec in enumerate(self.features.featurizers)]
        reference = artifacts.get(NOVELTY_ARTIFACT)
        self.novelty = NoveltyReference.load(reference) if reference else None

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """The pyfunc answer, under the serving policy: a request over the row limit
        or lacking a needed column is a client error (HTTP 400 from the server), a
        row's bytes come from `content` (or an allowed `path`), every error is a
        fixed message, and a row without a prediction has None there, so the JSON
        answer is strict (null, not NaN)."""
        from mlflow.exceptions import MlflowException

        token = self._begin()
        try:
            self.policy.check_rows(len(model_input))
            out = self.score(self._with_bytes(model_input), read=self.policy.path_bytes)[list(OUTPUT_COLUMNS)]
        except InputError as exc:
            raise MlflowException.invalid_parameter_value(str(exc)) from None
        finally:
            self._end(token)
        out["error"] = [served_message(s, e) for s, e in zip(out["status"], out["error"], strict=True)]
        for name in out.columns[out.dtypes.map(pd.api.types.is_float_dtype)]:  # prediction, novelty
            out[name] = out[name].astype(object).where(out[name].notna(), None)
        return out

    def busy_seconds(self) -> float:
        """How long the oldest `predict` in flight has run (0 when none): the server's
        health check says 503 past `limits.busy_after_s`."""
        with self._lock:
            oldest = min(self._started.values(), default=None)
        return 0.0 if oldest is None else time.monotonic() - oldest

    def _begin(self) -> object:
        token = object()
        with self._lock:
            self._started[id(token)] = time.monotonic()
        return token

    def _end(self, token: object) -> None:
        with self._lock:
            self._started.pop(id(token), None)

    def _with_bytes(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`frame` with `content` as raw bytes (base64 text decoded, oversize refused
        unread); a row whose content is refused keeps its refusal for `score`."""
        if "content" not in frame.columns:
            return frame
        frame = frame.reset_index(drop=True).copy()
        contents: list[Any] = []
        for value in frame["content"]:
            if value is None or (isinstance(value, float) and np.isnan(value)):
                contents.append(None)
                continue
            try:
                contents.append(self.policy.content_bytes(value))
            except Refused as refused:
                contents.append(refused)
        frame["content"] = pd.Series(contents, dtype=object)
        return frame

    def score(
        self,
        frame: pd.DataFrame,
        stored: Sequence[Sequence[np.ndarray | None]] | None = None,
        opts: WorkerOptions | None = None,
        read: Reader | None = None,
    ) -> pd.DataFrame:
        """Score `frame` (a `content` or `path` column + tabular columns); `path` rows
        are read with `read` (none given: refused), within `opts.max_pixels`
        (default: the serving policy's).

        `stored[i][r]`, when given and not None, is row r's embedding by the
        i-th featurizer (from the embeddings table): that image is not
        featurized again. Adds a `featurized` column: True where any
        featurizer ran on the row.
        """
        missing = [c for c in self.features.columns if c not in frame.columns]
        if "content" not in frame.columns and "path" not in frame.columns:
            missing.insert(0, "content or path")
        if missing:
            raise InputError(f"model input lacks column(s): {', '.join(missing)}")
        frame = frame.reset_index(drop=True)
        opts = opts or WorkerOptions(max_pixels=self.policy.limits.max_pixels)
        n = len(frame)
        status = [Status.OK.value] * n
        error: list[str | None] = [None] * n
        featurized = np.zeros(n, dtype=bool)
        vectors: list[list[np.ndarray | None]] = []
        for i, model in enumerate(self.featurizers):
            have: list[np.ndarray | None] = list(stored[i]) if stored is not None else [None] * n
            todo = [r for r in range(n) if have[r] is None and status[r] == Status.OK.value]
            for r, item, vector in _featurize_rows(frame, todo, model, opts, read):
                have[r] = vector
                if item.status is not Status.OK:
                    status[r], error[r] = item.status.value, item.error
            featurized[todo] = True
            vectors.append(have)
        ok = [r for r in range(n) if status[r] == Status.OK.value]
        out = pd.DataFrame(
            {
                "prediction": np.full(n, np.nan),
                "predicted_class": pd.Series([None] * n, dtype=object),
                "probabilities": pd.Series([None] * n, dtype=object),
                "novelty": np.full(n, np.nan),
                "status": status,
                "error": error,
                "featurized": featurized,
            }
        )
        if ok:
            embeddings = [np.stack([_present(v[r]) for r in ok]) for v in vectors]
            x = self.features.assemble(embeddings, frame.iloc[ok].reset_index(drop=True))
            self._predict_into(out, ok, x)
            if self.novelty is not None:
                out.loc[ok, "novelty"] = self.novelty.score(embeddings)
        return out

    def _predict_into(self, out: pd.DataFrame, rows: list[int], x: np.ndarray) -> None:
        predicted = predict_output(self.booster, x, self.features.task)
        if self.features.task == "regression":
            out.loc[rows, "prediction"] = predicted
            return
        index = predicted.argmax(axis=1)
        out.loc[rows, "prediction"] = index.astype(np.float64)
        out.loc[rows, "predicted_class"] = [self.features.classes[k] for k in index]
        for r, p in zip(rows, predicted.astype(np.float64), strict=True):
            out.at[r, "probabilities"] = p.tolist()


def _present(vector: np.ndarray | None) -> np.ndarray:
    """An ok row's embedding (set whenever its status is ok)."""
    assert vector is not None
    return vector


def _featurize_rows(
    frame: pd.DataFrame, rows: list[int], model: Featurizer, opts: WorkerOptions, read: Reader | None
) -> Iterator[tuple[int, Prepared, np.ndarray | None]]:
    """Embed the given rows' images (bytes in `content`, else read from `path`), in order."""
    contents = frame["content"] if "content" in frame.columns else None
    paths = frame["path"] if "path" in frame.columns else None

    def job(r: int) -> tuple[int, Callable[[], Prepared]]:
        blob = contents.iloc[r] if contents is not None else None
        if isinstance(blob, Refused):
            return 0, _refusal(blob)
        if blob is not None:
            data = bytes(blob)
            return len(data), lambda: prepare_bytes(data, model, opts.max_pixels)
        path = paths.iloc[r] if paths is not None else None
        if path is None or (isinstance(path, float) and np.isnan(path)):
            return 0, lambda: Prepared(None, Status.READ_ERROR, NO_IMAGE, None, None, None)
        return 0, lambda: _prepare_read(str(path), read, model, opts.max_pixels)

    order = iter(rows)
    for items, batch in pipelined((job(r) for r in rows), model, opts):
        for item, vector in zip(items, batch, strict=True):
            yield next(order), item, vector


def _refusal(refused: Refused) -> Callable[[], Prepared]:
    return lambda: Prepared(None, refused.status, refused.message, None, None, None)


def _prepare_read(path: str, read: Reader | None, model: Featurizer, max_pixels: int) -> Prepared:
    """Read a `path` row (in the decode pool), then decode it; never raises."""
    try:
        if read is None:
            raise Refused(Status.READ_ERROR, PATHS_OFF)  # no reader given: paths are off
        data = read(path)
    except Refused as refused:
        return _refusal(refused)()
    except Exception as exc:
        return Prepared(None, Status.READ_ERROR, f"{type(exc).__name__}: {exc}", None, None, None)
    return prepare_bytes(data, model, max_pixels)


def _load_bundled(spec: FeaturizerSpec, artifacts: Mapping[str, str], i: int) -> Featurizer:
    """The i-th featurizer, from the ONNX graph (when bundled and `prefer_graph`; no
    torch then) or the network weights, and the PCA basis bundled in the model.

    Parts without a file (seeded random or no weights) rebuild exactly from the spec.
    """
    base = _base(spec)
    graph = artifacts.get(_artifact("onnx", i))
    weights = artifacts.get(_artifact("weights", i))
    if graph is not None and prefer_graph():
        model = cached_featurizer(base, "cpu", graph=graph)
    elif weights is None:
        device = pick_device("auto")
        model = cached_featurizer(base, device)
    else:
        model = _torch_featurizer(base, weights, pick_device("auto"))
    return _projected(spec, artifacts, i, model)


def torch_featurizers(local_dir: str, device: str = "cpu") -> list[Featurizer]:
    """A downloaded model's featurizers as torch networks, whatever runs them when it
    scores (an `onnx_i` graph, say): the bundled `weights_i` loaded into the network, or
    the network rebuilt from the spec when the model bundles none (packaged, seeded
    random). For looking inside the network (activation maps); serving never calls it."""
    from mlflow.models import Model

    logged = Model.load(local_dir).flavors.get("python_function", {}).get("artifacts") or {}
    artifacts = {name: str(Path(local_dir, a["path"])) for name, a in logged.items()}
    features = model_features(local_dir)
    return [
        _projected(spec, artifacts, i, _torch_featurizer(_base(spec), artifacts.get(_artifact("weights", i)), device))
        for i, spec in enumerate(features.featurizers)
    ]


def _torch_featurizer(base: FeaturizerSpec, weights: str | None, device: str) -> Featurizer:
    """`base`'s torch network with the `weights` file loaded (None: the spec's own weights)."""
    if weights is None:
        return load_featurizer(base, device=device)
    import torch

    model = load_featurizer(replace(base, weights="random:0", weights_sha256=None), device=device)
    assert isinstance(model, TorchFeaturizer)  # a spec with weights is a network
    model.network.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
    return model


def _projected(spec: FeaturizerSpec, artifacts: Mapping[str, str], i: int, model: Featurizer) -> Featurizer:
    """`model` followed by the PCA basis bundled in the model, when `spec` is reduced."""
    if spec.projection is None:
        return model
    bundled = replace(spec.projection, location=artifacts[_artifact("projection", i)])
    return ProjectedFeaturizer(replace(spec, projection=bundled), model)


def _bundle(spec: FeaturizerSpec, i: int, dest: Path, graph: str | None = None) -> dict[str, str]:
    """Artifact files for the i-th featurizer: its network weights (unless the spec
    alone rebuilds them), its verified ONNX `graph` when the train config's runtime
    chose one, and its PCA basis, if reduced."""
    out = {}
    if graph is not None:
        out[_artifact("onnx", i)] = str(shutil.copy(graph, dest / f"graph_{i}.onnx"))
    if spec.projection is not None:
        path = dest / f"projection_{i}.npz"
        path.write_bytes(read_verified(spec.projection.location, spec.projection.sha256))
        out[_artifact("projection", i)] = str(path)
    base = _base(spec)
    if source_kind(base.weights) not in ("random", "none"):
        import torch

        path = dest / f"weights_{i}.pt"
        network = cached_featurizer(base, "cpu")
        assert isinstance(network, TorchFeaturizer)  # no graph given: torch
        torch.save(network.network.state_dict(), path)
        out[_artifact("weights", i)] = str(path)
    return out


def _base(spec: FeaturizerSpec) -> FeaturizerSpec:
    """The spec without its PCA projection (the network alone)."""
    if spec.projection is None:
        return spec
    return replace(spec, dim=spec.projection.in_dim, projection=None)


# --------------------------------------------------------------------- log + register
@dataclass(frozen=True)
class LoggedModel:
    uri: str  # models:/<id> (MLflow 3) or runs:/<run>/model
    name: str | None  # registered name
    version: str | None  # registered version


def log_model(
    result: TrainResult,
    registered_name: str | None,
    graphs: Sequence[str | None] = (),
    novelty: NoveltyReference | None = None,
) -> LoggedModel:
    """Log the pyfunc into the active MLflow run; register it under `registered_name`.

    `graphs[i]`: the i-th featurizer's verified ONNX graph, bundled so the model
    scores with ONNX Runtime (and without torch) where `prefer_graph` says so.
    `novelty`, when given, ships with the model and fills the `novelty` output.
    """
    spec = result.features
    with tempfile.TemporaryDirectory(prefix="imgfeat-model-") as tmp:
        artifacts = {
            FEATURES_ARTIFACT: str(Path(tmp, "features.json")),
            BOOSTER_ARTIFACT: str(Path(tmp, "booster.ubj")),
        }
        Path(artifacts[FEATURES_ARTIFACT]).write_text(spec.to_json())
        result.booster.save_model(artifacts[BOOSTER_ARTIFACT])
        for i, featurizer in enumerate(spec.featurizers):
            artifacts.update(_bundle(featurizer, i, Path(tmp), graphs[i] if i < len(graphs) else None))
        if novelty is not None:
            artifacts[NOVELTY_ARTIFACT] = str(Path(tmp, "novelty.npz"))
            novelty.save(artifacts[NOVELTY_ARTIFACT])
        from imgfeat.sources import read_bytes  # logging runs beside Spark; loading never comes here

        example = {"content": read_bytes(result.example["path"]), **{c: result.example[c] for c in spec.columns}}
        return _log(artifacts, spec, example, registered_name, Path(tmp))


def relog(local_dir: str, registered_name: str | None) -> LoggedModel:
    """Log a downloaded model again, into the active run, with this imgfeat's code and
    the same artifacts (booster, weights, graphs, PCA bases, novelty reference): the
    same predictions under today's serving rules."""
    from mlflow.models import Model

    meta = Model.load(local_dir)
    logged = meta.flavors.get("python_function", {}).get("artifacts") or {}
    if FEATURES_ARTIFACT not in logged:
        raise InputError(f"{local_dir} is not an imgfeat image model (no {FEATURES_ARTIFACT!r} artifact)")
    artifacts = {name: str(Path(local_dir, a["path"])) for name, a in logged.items()}
    spec = FeatureSpec.from_json(Path(artifacts[FEATURES_ARTIFACT]).read_text())
    example = meta.load_input_example(local_dir)
    row = example.iloc[0].to_dict() if isinstance(example, pd.DataFrame) and len(example) else None
    if row is None:
        raise InputError(f"{local_dir} holds no input example to log the model with: retrain it with `imgfeat train`")
    with tempfile.TemporaryDirectory(prefix="imgfeat-model-") as tmp:
        return _log(artifacts, spec, row, registered_name, Path(tmp))


def follows_serving_rules(local_dir: str) -> bool:
    """Whether a downloaded model's logged code applies the serving policy (paths off by
    default, limits, fixed messages): versions logged before it read any path a client names."""
    from mlflow.models import Model

    code = Model.load(local_dir).flavors.get("python_function", {}).get("code")
    return bool(code) and Path(local_dir, code, "imgfeat", "served_input.py").is_file()


def _log(
    artifacts: Mapping[str, str],
    spec: FeatureSpec,
    example: Mapping[str, Any],
    registered_name: str | None,
    tmp: Path,
) -> LoggedModel:
    """`mlflow.pyfunc.log_model` as code, with `SERVED_CODE`, the signature and pinned requirements."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import Array

    columns: list[Any] = [ColSpec("string", "content", required=False), ColSpec("string", "path", required=False)]
    inputs = Schema(columns + [ColSpec(spec.column_types[c], c) for c in spec.columns])
    outputs = Schema(
        [
            ColSpec("double", "prediction"),
            ColSpec("string", "predicted_class", required=False),
            ColSpec(Array("double"), "probabilities", required=False),
            ColSpec("double", "novelty", required=False),
            ColSpec("string", "status"),
            ColSpec("string", "error", required=False),
        ]
    )
    package = _served_code(tmp / "code")
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(Path(package, MODEL_CODE)),  # models from code: loading unpickles nothing
        artifacts=dict(artifacts),
        signature=ModelSignature(inputs=inputs, outputs=outputs),
        input_example=pd.DataFrame([dict(example)]),
        registered_model_name=registered_name,
        code_paths=[package],
        pip_requirements=_requirements(),
    )
    registered = info.registered_model_version
    return LoggedModel(info.model_uri, registered_name if registered else None, str(registered) if registered else None)


def _served_code(dest: Path) -> str:
    """A copy of the package holding only `SERVED_CODE`, for the model's `code_paths`
    (read from the package folder, or from the zip imgfeat was imported from under
    `spark-submit --py-files imgfeat.zip`)."""
    package = Path(__file__).parent
    out = dest / package.name
    if package.is_dir():
        for name in SERVED_CODE:
            source = package / name
            if source.is_dir():
                shutil.copytree(source, out / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                out.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, out / name)
        return str(out)
    archive = next(p for p in package.parents if p.is_file())
    prefixes = tuple(f"{package.name}/{name}" for name in SERVED_CODE)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(dest, [m for m in zf.namelist() if m.startswith(prefixes) and "__pycache__" not in m])
    return str(out)


def _requirements() -> list[str]:
    """imgfeat's own dependencies, pinned to the versions installed here."""
    names = {"mlflow"}
    for req in requires("imgfeat") or []:
        if "extra ==" not in req:
            names.add(req.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip())
    pinned = []
    for name in sorted(names):
        try:
            pinned.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pinned.append(name)
    return pinned


# ------------------------------------------------------------------ read a logged model
def model_features(local_dir: str) -> FeatureSpec:
    """The `FeatureSpec` of a downloaded model, read without loading its networks."""
    return FeatureSpec.from_json(Path(_artifact_file(local_dir, FEATURES_ARTIFACT)).read_text())


def model_booster(local_dir: str) -> Any:  # -> xgboost.Booster
    """The booster of a downloaded model, loaded without its networks."""
    import xgboost

    booster = xgboost.Booster()
    booster.load_model(_artifact_file(local_dir, BOOSTER_ARTIFACT))
    return booster


def _artifact_file(local_dir: str, name: str) -> str:
    from mlflow.models import Model

    artifacts = Model.load(local_dir).flavors.get("python_function", {}).get("artifacts") or {}
    if name not in artifacts:
        raise InputError(f"{local_dir} is not an imgfeat image model (no {name!r} artifact)")
    return str(Path(local_dir, artifacts[name]["path"]))


def load_image_model(local_dir: str) -> ImageModel:
    """The `ImageModel` inside a downloaded pyfunc directory.

    Versions logged before imgfeat logged models as code hold a pickled
    `ImageModel`; they load as long as MLflow allows unpickling (its default
    today), else the error says what to do.
    """
    from mlflow.exceptions import MlflowException

    try:
        model = mlflow.pyfunc.load_model(local_dir).unwrap_python_model()
    except MlflowException as exc:
        if "pickle" not in exc.message:
            raise
        raise InputError(
            f"{local_dir} holds a pickled model logged by an older imgfeat, and MLflow refuses to unpickle it "
            "(MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false): retrain with `imgfeat train` to log it as code, "
            "or allow unpickling for this model only if you trust its origin"
        ) from None
    if not isinstance(model, ImageModel):
        raise InputError(f"{local_dir} is not an imgfeat image model ({type(model).__name__})")
    return model
