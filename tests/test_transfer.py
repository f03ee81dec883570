"""Transfer models: raw images in, BatchNormalization frozen in both phases, saving, heads."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest

from facelab.config import Experiment
from facelab.models import MODEL_BUILDERS, build_model
from facelab.models.heads import HeadConfig, add_head, head_from_experiment
from facelab.models.transfer import (
    BACKBONES,
    BackbonePreprocessing,
    InferenceBackbone,
    WeightsUnavailableError,
    build_transfer,
    get_backbone,
    prepare_fine_tuning,
)
from facelab.predict import load_model_file
from facelab.tasks import get_task

# The smallest sides keras.applications accepts, one backbone per preprocessing mode ("tf":
# MobileNetV2, InceptionV3 and InceptionResNetV2 share it; "caffe"; EfficientNet's own). The
# larger ones are round-tripped by benchmarks/transfer_synthetic.py and the transfer notebooks.
SIZES = {"resnet50": 32, "mobilenetv2": 32, "efficientnetb0": 32}
PREPROCESS_INPUT = {
    "inceptionv3": keras.applications.inception_v3.preprocess_input,
    "resnet50": keras.applications.resnet50.preprocess_input,
    "mobilenetv2": keras.applications.mobilenet_v2.preprocess_input,
    "inceptionresnetv2": keras.applications.inception_resnet_v2.preprocess_input,
    "efficientnetb0": keras.applications.efficientnet.preprocess_input,
}


def raw_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Raw 0-255 float images, what the data pipeline feeds a model."""
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def one_hot(n: int, classes: int = 3) -> np.ndarray:
    return np.eye(classes, dtype="float32")[np.arange(n) % classes]


def values(layer: keras.Layer) -> dict[str, np.ndarray]:
    """Every weight of ``layer`` (trainable or not, BN moving statistics included) by path."""
    return {v.path: np.array(v) for v in layer.weights}


def fit(model: keras.Model, lr: float = 1e-2, epochs: int = 2) -> None:
    """Real fit steps, run eagerly: on tiny batches that is faster than tracing the graph."""
    keras.utils.set_random_seed(0)
    model.compile(keras.optimizers.Adam(lr), "categorical_crossentropy", run_eagerly=True)
    model.fit(raw_images(16), one_hot(16), batch_size=8, epochs=epochs, verbose=0)


def batchnorms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [la for la in model.layers if isinstance(la, keras.layers.BatchNormalization)]


def frozen_mobilenet() -> keras.Model:
    return build_transfer("mobilenetv2", 32, num_classes=3, weights=None, freeze_base=True)


# --- the freezing contract, after real fit steps ---------------------------------------------


def test_phase1_changes_no_base_weight_and_no_batchnorm_statistic():
    model = frozen_mobilenet()
    backbone = get_backbone(model)
    assert backbone.trainable_weights == []
    before, head = values(backbone), values(model.get_layer("head_dense1"))
    assert sum("moving_mean" in k for k in before) == len(batchnorms(backbone)) > 10
    fit(model)
    after = values(backbone)
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    assert any(
        not np.array_equal(v, head[k]) for k, v in values(model.get_layer("head_dense1")).items()
    ), "the head did not train"


def test_phase2_changes_the_unfrozen_convolutions_but_no_batchnorm_statistic():
    model = frozen_mobilenet()
    fit(model, epochs=1)  # phase 1
    backbone = get_backbone(model)
    prepare_fine_tuning(model, 30)
    layers = backbone.layers[1:]
    bottom, top = layers[:-30], layers[-30:]
    assert not any(layer.trainable for layer in bottom)
    assert all(
        layer.trainable != isinstance(layer, keras.layers.BatchNormalization) for layer in top
    )
    before = values(backbone)
    fit(model, lr=1e-3)  # phase 2 (recompiled, as train.fit does)
    after = values(backbone)
    convs = [la for la in top if isinstance(la, keras.layers.Conv2D | keras.layers.DepthwiseConv2D)]
    changed = [la.name for la in convs if not np.array_equal(after[la.weights[0].path], before[la.weights[0].path])]  # fmt: skip
    assert changed, "no unfrozen convolution kernel changed"
    for layer in bottom + batchnorms(backbone):
        for v in layer.weights:  # BN: gamma, beta, moving mean and variance all unchanged
            np.testing.assert_array_equal(after[v.path], before[v.path], err_msg=v.path)


def test_fine_tuning_every_layer_still_keeps_batchnorm_frozen():
    model = frozen_mobilenet()
    prepare_fine_tuning(model, -1)
    for layer in get_backbone(model).layers:
        if layer.weights:
            assert layer.trainable != isinstance(layer, keras.layers.BatchNormalization), layer.name


def test_fine_tuning_zero_layers_warns_that_only_the_head_trains():
    model = frozen_mobilenet()
    with pytest.warns(UserWarning, match="head only"):
        prepare_fine_tuning(model, 0)
    assert get_backbone(model).trainable_weights == []


def test_fine_tuning_a_model_without_backbone_says_which_models_have_one():
    model = build_model(Experiment(model="fromscratch", image_size=32), get_task("light"))
    with pytest.raises(ValueError, match="fine_tune_epochs=0"):
        prepare_fine_tuning(model, 5)


def test_backbone_runs_in_inference_mode_even_with_training_true_and_trainable_batchnorm():
    # The guarantee does not rest on BN's trainable flag: the backbone ignores training=True.
    model = frozen_mobilenet()
    backbone = get_backbone(model)
    for layer in backbone.layers:
        layer.trainable = True
    x = keras.ops.convert_to_tensor(raw_images(4) / 127.5 - 1)
    np.testing.assert_array_equal(backbone(x, training=True), backbone(x, training=False))
    stats = {v.path: np.array(v) for bn in batchnorms(backbone) for v in bn.non_trainable_weights}
    fit(model)
    for path, value in stats.items():
        np.testing.assert_array_equal(_var(backbone, path), value, err_msg=path)


def _var(model: keras.Model, path: str) -> np.ndarray:
    return next(np.array(v) for v in model.weights if v.path == path)


def test_without_weights_the_whole_network_trains_from_scratch_batchnorm_included():
    model = build_transfer("mobilenetv2", 32, num_classes=3)  # weights=None
    backbone = get_backbone(model)
    assert not isinstance(backbone, InferenceBackbone)
    assert len(backbone.trainable_weights) > 100
    before = {v.path: np.array(v) for bn in batchnorms(backbone) for v in bn.non_trainable_weights}
    fit(model, epochs=1)
    moved = [p for p, value in before.items() if not np.array_equal(_var(backbone, p), value)]
    assert moved, "BatchNormalization did not learn statistics from scratch"


def test_resnet50_from_scratch_starts_each_residual_block_as_the_identity():
    def zero_gamma(model):
        return sum(not np.any(np.array(bn.gamma)) for bn in batchnorms(get_backbone(model)))

    assert zero_gamma(build_transfer("resnet50", 32)) == 16  # one per residual block
    assert zero_gamma(build_transfer("resnet50", 32, freeze_base=True)) == 0


# --- raw images in, the backbone's own preprocessing inside ----------------------------------


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_preprocessing_layer_is_the_backbones_own_preprocess_input(name):
    x = raw_images(2, 8)
    layer = BackbonePreprocessing(BACKBONES[name].preprocessing)
    expected = PREPROCESS_INPUT[name](x.copy())
    np.testing.assert_allclose(layer(x), expected, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_saved_keras_and_h5_models_predict_identically_on_raw_images(name, tmp_path):
    size = SIZES[name]
    model = build_transfer(name, size, num_classes=3, freeze_base=True)
    x = raw_images(4, size)
    expected, features = probabilities(model, x), pooled(model, x)
    # Random weights may give near-uniform probabilities; the pooled features still differ.
    assert np.ptp(features, axis=0).max() > 1e-3 * np.abs(features).max() > 0
    for suffix in (".keras", ".h5"):
        model.save(tmp_path / f"model{suffix}")
        loaded = load_model_file(tmp_path / f"model{suffix}")
        assert isinstance(get_backbone(loaded), InferenceBackbone)
        assert loaded.get_layer("preprocess").mode == BACKBONES[name].preprocessing
        np.testing.assert_allclose(probabilities(loaded, x), expected, atol=1e-5, rtol=0)
        scale = np.abs(features).max()
        np.testing.assert_allclose(pooled(loaded, x), features, atol=1e-5 * scale, rtol=1e-5)


def probabilities(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """What ``predict`` returns, without tracing a predict function for each model."""
    return np.asarray(model(x, training=False))


def pooled(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The head's pooled backbone features for raw images ``x``."""
    return np.asarray(keras.Model(model.input, model.get_layer("head_pool").output)(x))


def test_a_fine_tuned_model_reloads_with_its_trainable_layers(tmp_path):
    model = frozen_mobilenet()
    prepare_fine_tuning(model, 12)
    fit(model, epochs=1)
    x = raw_images(4)
    expected = probabilities(model, x)
    flags = [la.trainable for la in get_backbone(model).layers]
    for suffix in (".keras", ".h5"):
        model.save(tmp_path / f"model{suffix}")
        loaded = load_model_file(tmp_path / f"model{suffix}")
        assert [la.trainable for la in get_backbone(loaded).layers] == flags
        np.testing.assert_allclose(probabilities(loaded, x), expected, atol=1e-5, rtol=0)


# --- weights: None, "imagenet", a local file ---------------------------------------------------


def test_imagenet_without_network_says_to_pass_none_or_a_local_file(monkeypatch):
    url = "https://storage.googleapis.com/x/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"

    def offline(*args, **kwargs):
        raise Exception(f"URL fetch failure on {url}: None -- [Errno -3] name resolution")

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
    with pytest.raises(WeightsUnavailableError) as caught:
        build_transfer("resnet50", 32, weights="imagenet")
    message = str(caught.value)
    assert "--weights none" in message and url in message
    assert "/path/to/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in message


def test_a_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5: weights file not found"):
        build_transfer("mobilenetv2", 32, weights=tmp_path / "nope.h5")


def _legacy_h5(model: keras.Model, path) -> None:
    """Weights in the legacy .h5 layout of the files keras.applications downloads."""
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    with h5py.File(path, "w") as f:
        save_weights_to_hdf5_group(f, model)


@pytest.mark.parametrize("kind", ["weights.h5", "legacy.h5"])
def test_a_local_weights_file_initialises_a_frozen_backbone(kind, tmp_path):
    source = get_backbone(build_transfer("mobilenetv2", 32))
    for v in source.weights:
        v.assign(v + np.float32(0.01))  # unlike any fresh initialisation
    path = tmp_path / f"pretrained.{kind}"
    source.save_weights(path) if kind == "weights.h5" else _legacy_h5(source, path)
    model = build_transfer("mobilenetv2", 32, weights=str(path))
    backbone = get_backbone(model)
    assert isinstance(backbone, InferenceBackbone) and backbone.trainable_weights == []
    for mine, theirs in zip(backbone.weights, source.weights, strict=True):
        np.testing.assert_array_equal(np.array(mine), np.array(theirs))


def test_unfrozen_pretrained_base_trains_every_layer_but_batchnorm(tmp_path):
    path = tmp_path / "pretrained.weights.h5"
    get_backbone(build_transfer("mobilenetv2", 32)).save_weights(path)
    backbone = get_backbone(build_transfer("mobilenetv2", 32, weights=path, freeze_base=False))
    assert isinstance(backbone, InferenceBackbone)
    for layer in backbone.layers:
        if layer.weights:
            assert layer.trainable != isinstance(layer, keras.layers.BatchNormalization), layer.name


def test_a_weights_file_of_another_backbone_is_named_with_the_fix(tmp_path):
    path = tmp_path / "mobilenet.weights.h5"
    get_backbone(build_transfer("mobilenetv2", 32)).save_weights(path)
    with pytest.raises(ValueError, match="mobilenet.weights.h5: cannot be loaded as resnet50"):
        build_transfer("resnet50", 32, weights=str(path))


def test_too_small_images_name_the_minimum_size():
    with pytest.raises(ValueError, match="inceptionv3 needs images of at least 75 px"):
        build_transfer("inceptionv3", 64)


def test_every_backbone_is_a_registered_model():
    assert set(BACKBONES) <= set(MODEL_BUILDERS)
    assert {"inceptionv3", "resnet50", "mobilenetv2", "inceptionresnetv2", "efficientnetb0"} <= set(
        BACKBONES
    )


# --- heads ---------------------------------------------------------------------------------


def head_layers(exp: Experiment, classes: int = 3, multilabel: bool = False) -> list:
    features = keras.Input((2, 2, 8))
    model = keras.Model(
        features, add_head(features, classes, head_from_experiment(exp), multilabel)
    )
    return model.layers[1:]


def test_reference_head_is_gap_dense512_dropout_dense128_dropout_softmax():
    layers = head_layers(Experiment(dense_dropout=0.55, head_dropout=0.4))
    kinds = [type(la).__name__ for la in layers]
    assert kinds == ["GlobalAveragePooling2D", "Dense", "Dropout", "Dense", "Dropout", "Dense"]
    assert [la.units for la in layers if isinstance(la, keras.layers.Dense)] == [512, 128, 3]
    assert [la.rate for la in layers if isinstance(la, keras.layers.Dropout)] == [0.55, 0.4]
    assert layers[-1].activation is keras.activations.softmax


def test_gender_head_has_per_layer_units_dropout_and_l2():
    layers = head_layers(Experiment(task="gender", extra={"head": "gender"}), classes=2)
    dense = [la for la in layers if isinstance(la, keras.layers.Dense)]
    assert [la.units for la in dense] == [512, 512, 512, 2]
    assert [la.kernel_regularizer.l2 for la in dense[:3]] == pytest.approx([1e-3] * 3)
    assert [la.rate for la in layers if isinstance(la, keras.layers.Dropout)] == [0.5, 0.5]
    custom = head_layers(
        Experiment(extra={"head": "gender", "units": [64, 32], "dropouts": [0, 0.3], "l2": 0})
    )
    assert [type(la).__name__ for la in custom] == [
        "GlobalAveragePooling2D", "Dense", "Dense", "Dropout", "Dense",
    ]  # fmt: skip


def test_multilabel_head_ends_in_independent_sigmoids():
    assert head_layers(Experiment(), classes=5, multilabel=True)[-1].activation is (
        keras.activations.sigmoid
    )


@pytest.mark.parametrize(
    "options, message",
    [
        ({"head": "gender", "units": [64, 64]}, "one dropout rate per dense layer"),
        ({"head": "tiny"}, "head 'tiny' unknown"),
        ({"dropouts": [1.0, 0.0]}, r"must be in \[0, 1\)"),
    ],
)
def test_head_mistakes_say_what_to_pass(options, message):
    with pytest.raises(ValueError, match=message):
        head_from_experiment(Experiment(extra=options))


def test_head_config_can_be_built_directly():
    assert HeadConfig(units=[8], dropouts=[0]).units == (8,)


# --- through the Experiment ------------------------------------------------------------------


def test_experiment_extra_can_ask_for_a_frozen_base_without_weights():
    exp = Experiment(
        task="light", model="efficientnetb0", image_size=32, extra={"freeze_base": True}
    )
    backbone = get_backbone(build_model(exp, get_task("light")))
    assert isinstance(backbone, InferenceBackbone) and backbone.trainable_weights == []
    from_scratch = get_backbone(build_model(exp.replace(extra={}), get_task("light")))
    assert not isinstance(from_scratch, InferenceBackbone) and from_scratch.trainable_weights
