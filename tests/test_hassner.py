"""The Levi & Hassner CNN: architecture, its LRN layer, saving, training and registration."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from facelab.config import Experiment
from facelab.models import MODEL_BUILDERS, build_model
from facelab.models.hassner import LocalResponseNormalization, build_hassner, min_input_side
from facelab.tasks import get_task

SMALL = (64, 64, 3)


def half_lit_images(n: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw 0-255 images whose left (label 0) or right (label 1) half is bright, with noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.uniform(0, 90, size=(n, *SMALL)).astype("float32")
    for image, label in zip(images, labels, strict=True):
        image[:, label * 32 : label * 32 + 32] += 140
    return images, labels


def caffe_lrn(x: np.ndarray, local_size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """Caffe's ACROSS_CHANNELS LRN, transcribed: x / (k + alpha / n * sum of n squares) ** beta."""
    half = (local_size - 1) // 2
    squares = np.pad(x.astype(np.float64) ** 2, [(0, 0)] * (x.ndim - 1) + [(half, half)])
    window = sum(squares[..., i : i + x.shape[-1]] for i in range(local_size))
    return x / (k + alpha / local_size * window) ** beta


def test_conv_pool_lrn_layers_follow_the_paper():
    model = build_hassner(SMALL, num_classes=2)
    assert model.name == "hassnercnn"
    names = [type(layer).__name__ for layer in model.layers]
    block = ["Conv2D", "MaxPooling2D"]
    assert names == [
        "InputLayer", "Rescaling",
        *block, "LocalResponseNormalization",
        *block, "LocalResponseNormalization",
        *block,
        "Flatten", "Dense", "Dropout", "Dense", "Dropout", "Dense",
    ]  # fmt: skip
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size, c.strides) for c in convs] == [
        (96, (7, 7), (4, 4)),
        (256, (5, 5), (1, 1)),
        (384, (3, 3), (1, 1)),
    ]
    assert all(c.activation is keras.activations.relu for c in convs)
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert [(p.pool_size, p.strides) for p in pools] == [((3, 3), (2, 2))] * 3
    assert model.get_layer("rescale").scale == pytest.approx(1 / 255)


def test_fully_connected_layers_are_two_512_relu_with_dropout_half():
    model = build_hassner(SMALL, num_classes=2)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [512, 512, 2]
    assert [d.activation for d in dense[:2]] == [keras.activations.relu] * 2
    dropouts = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert dropouts == [0.5, 0.5]
    head = model.get_layer("predictions")
    assert head.activation is keras.activations.softmax and head.dtype_policy.compute_dtype == (
        "float32"
    )


def test_paper_input_size_gives_the_caffe_feature_maps_and_parameter_count():
    model = build_hassner((227, 227, 3), num_classes=2)
    sides = [model.get_layer(f"pool{i}").output.shape[1] for i in (1, 2, 3)]
    assert sides == [28, 14, 7]  # Caffe's ceil-mode pooling of 56 -> 28 -> 14 -> 7
    assert 11_000_000 < model.count_params() < 12_000_000


def test_lrn_layers_use_the_papers_settings_in_tensorflow_convention():
    norm = build_hassner(SMALL).get_layer("norm1")
    # Caffe local_size 5, alpha 1e-4: TF's depth_radius 2 and alpha 1e-4 / 5.
    assert (norm.depth_radius, norm.bias, norm.beta) == (2, 1.0, 0.75)
    assert norm.alpha == pytest.approx(2e-5)


@pytest.mark.parametrize(
    ("depth_radius", "bias", "alpha", "beta"), [(2, 1.0, 2e-5, 0.75), (1, 2.0, 0.3, 0.6)]
)
def test_lrn_matches_tensorflow(depth_radius, bias, alpha, beta):
    # Large activations, so even the paper's small alpha changes the values measurably.
    x = np.random.default_rng(0).normal(0, 30, size=(2, 5, 5, 16)).astype("float32")
    expected = tf.nn.local_response_normalization(x, depth_radius, bias, alpha, beta).numpy()
    assert np.abs(expected - x).max() > 1e-2  # the normalisation does something here
    got = LocalResponseNormalization(depth_radius, bias, alpha, beta)(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, rtol=1e-5, atol=1e-6)


def test_from_caffe_divides_alpha_by_the_window_size():
    x = np.random.default_rng(1).normal(0, 20, size=(3, 4, 4, 10)).astype("float32")
    layer = LocalResponseNormalization.from_caffe(local_size=5, alpha=0.05, beta=0.75, k=2.0)
    expected = caffe_lrn(x, local_size=5, alpha=0.05, beta=0.75, k=2.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="odd"):
        LocalResponseNormalization.from_caffe(local_size=4)


def test_lrn_config_round_trips():
    layer = LocalResponseNormalization(3, 1.5, 0.01, 0.5, name="n")
    config = layer.get_config()
    assert {k: config[k] for k in ("depth_radius", "bias", "alpha", "beta")} == {
        "depth_radius": 3,
        "bias": 1.5,
        "alpha": 0.01,
        "beta": 0.5,
    }
    again = LocalResponseNormalization.from_config(config)
    assert (again.depth_radius, again.bias, again.alpha, again.beta) == (3, 1.5, 0.01, 0.5)


def test_too_small_input_names_the_minimum_size():
    smallest = min_input_side()
    build_hassner((smallest, smallest, 3))
    with pytest.raises(ValueError, match=f"at least {smallest} px"):
        build_hassner((smallest - 1, smallest - 1, 3))


def test_multilabel_outputs_are_independent_sigmoids():
    model = build_hassner(SMALL, num_classes=5, multilabel=True)
    assert model.get_layer("predictions").activation is keras.activations.sigmoid
    probs = model.predict(half_lit_images(4)[0], verbose=0)
    assert probs.shape == (4, 5) and ((probs > 0) & (probs < 1)).all()


def test_a_few_epochs_learn_a_tiny_problem():
    keras.utils.set_random_seed(0)
    images, labels = half_lit_images()
    model = build_hassner(SMALL, num_classes=2)
    model.compile(keras.optimizers.Adam(3e-4), "sparse_categorical_crossentropy")
    loss = model.fit(images, labels, epochs=5, batch_size=16, verbose=0).history["loss"]
    assert loss[-1] < 0.5 * loss[0]
    predicted = model.predict(images, verbose=0).argmax(axis=1)
    assert (predicted == labels).mean() >= 0.9


@pytest.mark.parametrize("extension", ["keras", "h5"])
def test_saved_model_predicts_identically(tmp_path, extension):
    keras.utils.set_random_seed(0)
    images, _ = half_lit_images(8)
    model = build_hassner(SMALL, num_classes=2)
    model.save(tmp_path / f"hassner.{extension}")
    loaded = keras.models.load_model(tmp_path / f"hassner.{extension}")
    assert isinstance(loaded.get_layer("norm2"), LocalResponseNormalization)
    expected = model.predict(images, verbose=0)
    assert np.abs(loaded.predict(images, verbose=0) - expected).max() < 1e-5


def test_registered_and_built_from_an_experiment():
    assert "hassnercnn" in MODEL_BUILDERS
    gender = get_task("gender")
    model = build_model(Experiment(task="gender", model="hassnercnn", image_size=64), gender)
    assert model.input_shape == (None, 64, 64, 3) and model.output_shape == (None, 2)
    assert model.get_layer("fc1_dropout").rate == 0.5
    exp = Experiment(task="gender", model="hassnercnn", image_size=64, extra={"dropout": 0.2})
    model = build_model(exp, gender)
    assert [model.get_layer(f"fc{i}_dropout").rate for i in (1, 2)] == [0.2, 0.2]
