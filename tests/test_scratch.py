"""FromScratch: the reference architecture, its size, training and saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from facelab.config import Experiment
from facelab.models import registry
from facelab.models.registry import MODEL_BUILDERS, build_model, register_model
from facelab.models.scratch import build_fromscratch

SMALL = (32, 32, 3)
BLOCK = ["Conv2D", "ReLU", "BatchNormalization", "MaxPooling2D", "Dropout"]


def light_images(n: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw 0-255 images lit from the left, centre or right (labels 0, 1, 2), with noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = rng.uniform(0, 80, size=(n, *SMALL)).astype("float32")
    for image, label in zip(images, labels, strict=True):
        image[:, label * 10 : label * 10 + 12] += 150
    return images, labels


def test_default_model_has_fewer_than_700k_parameters():
    model = build_fromscratch()
    assert model.name == "fromscratch"
    assert model.input_shape == (None, 128, 128, 3)
    assert model.count_params() < 700_000


def test_outputs_are_probabilities_over_the_classes():
    images, _ = light_images(4)
    probs = build_fromscratch(SMALL, num_classes=3).predict(images, verbose=0)
    assert probs.shape == (4, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_multilabel_outputs_are_independent_sigmoids():
    model = build_fromscratch(SMALL, num_classes=5, multilabel=True)
    assert model.get_layer("predictions").activation is keras.activations.sigmoid
    probs = model.predict(light_images(4)[0], verbose=0)
    assert probs.shape == (4, 5) and ((probs > 0) & (probs < 1)).all()


def test_blocks_are_conv_relu_batchnorm_pool_dropout_in_that_order():
    model = build_fromscratch(conv_dropout=0.25, dense_dropout=0.7)
    names = [type(layer).__name__ for layer in model.layers]
    assert names[:2] == ["InputLayer", "Rescaling"]
    filters = [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert filters[0] == 16 and filters == sorted(filters)
    blocks = names[2 : 2 + 5 * len(filters)]
    assert blocks == BLOCK * len(filters)
    assert names[2 + 5 * len(filters) :] == ["Flatten", "Dense", "Dropout", "Dense"]
    dropouts = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert dropouts == [0.25] * len(filters) + [0.7]


def test_model_takes_raw_pixels_and_rescales_them_inside():
    model = build_fromscratch(SMALL)
    assert model.get_layer("rescale").scale == pytest.approx(1 / 255)


def test_too_small_input_names_the_minimum_size():
    with pytest.raises(ValueError, match="at least 32 px"):
        build_fromscratch((16, 16, 3))


def test_a_few_fit_steps_reduce_the_loss():
    keras.utils.set_random_seed(0)
    images, labels = light_images()
    model = build_fromscratch(SMALL)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    # The training loss: BatchNorm's moving statistics lag far behind after so few steps.
    loss = model.fit(images, labels, epochs=8, batch_size=16, verbose=0).history["loss"]
    assert loss[-1] < 0.5 * loss[0]


@pytest.mark.parametrize("extension", ["keras", "h5"])
def test_saved_model_predicts_identically(tmp_path, extension):
    keras.utils.set_random_seed(0)
    images, labels = light_images(16)
    model = build_fromscratch(SMALL)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=1, batch_size=8, verbose=0)  # non-trivial BN statistics
    model.save(tmp_path / f"fromscratch.{extension}")
    loaded = keras.models.load_model(tmp_path / f"fromscratch.{extension}")
    expected = model.predict(images, verbose=0)
    assert np.abs(loaded.predict(images, verbose=0) - expected).max() < 1e-5


def test_build_model_dispatches_on_the_experiment_model_name():
    exp = Experiment(model="fromscratch", image_size=64, conv_dropout=0.2, dense_units=64)
    model = build_model(exp, num_classes=2)
    assert model.name == "fromscratch" and model.output_shape == (None, 2)
    assert model.input_shape == (None, 64, 64, 3)
    assert model.get_layer("dense").units == 64
    assert model.get_layer("block1_dropout").rate == 0.2


def test_build_model_lists_known_models_for_an_unknown_name():
    with pytest.raises(ValueError, match="known models: .*'fromscratch'"):
        build_model(Experiment(model="nosuchnet"), num_classes=3)


def test_other_modules_can_register_a_model(monkeypatch):
    monkeypatch.setattr(registry, "MODEL_BUILDERS", dict(MODEL_BUILDERS))  # undone after the test

    @register_model("tiny")
    def tiny(exp, num_classes, multilabel=False):
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(num_classes)], name="tiny")

    assert build_model(Experiment(model="tiny"), num_classes=3).name == "tiny"
    assert "tiny" not in MODEL_BUILDERS


def test_standardized_input_ignores_the_overall_brightness(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_fromscratch((32, 32, 3), 3, standardize=True)
    image = np.random.default_rng(0).uniform(0, 120, (1, 32, 32, 3)).astype("float32")
    assert np.allclose(
        model.predict(image, verbose=0), model.predict(image * 2, verbose=0), atol=1e-4
    )
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    assert np.allclose(again.predict(image, verbose=0), model.predict(image, verbose=0), atol=1e-6)
