"""The learning-rate range test: a sensible suggestion, the model left untouched, the plot."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from facelab.lr_finder import LRFinderResult, find_lr, plot_lr_finder, steepest_lr

# Problem 1, softmax regression on three separable blobs, plain SGD, batch 32: 50 steps at a fixed
# rate bring the loss under a quarter of its start for rates from GOOD_LOW to GOOD_HIGH, not at
# GOOD_LOW / 10 (test_classification_has_this_good_lr_range). Above GOOD_HIGH the outcome is
# chaotic rather than a clear blow-up, so problem 2 supplies a sharp upper edge.
GOOD_LOW, GOOD_HIGH = 0.03, 10.0
FIXED_STEPS, BATCH = 50, 32
# Problem 2, least squares with full-batch gradient descent: it converges for lr < 2 / lambda_max
# of the loss's Hessian and diverges above, so the upper edge is known exactly.


def blobs(n: int = 256, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian blobs, centres 3 apart from the origin; one-hot labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, dim))
    centres *= 3.0 / np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.arange(n) % 3
    x = (centres[labels] + rng.normal(size=(n, dim))).astype("float32")
    return x, np.eye(3, dtype="float32")[labels]


def softmax_regression(lr: float = 0.01) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(keras.optimizers.SGD(lr), "categorical_crossentropy")
    return model


def same_state(model: keras.Model, weights: list, optimizer_state: list) -> bool:
    now = [v.numpy() for v in model.optimizer.variables]
    return all(
        np.array_equal(a, b) for a, b in zip(model.get_weights(), weights, strict=True)
    ) and (all(np.array_equal(a, b) for a, b in zip(now, optimizer_state, strict=True)))


@pytest.fixture(scope="module")
def finder_run() -> tuple[keras.Model, list, list, LRFinderResult]:
    x, y = blobs()
    model = softmax_regression()  # plain SGD, as the good range was measured with
    model.optimizer.build(model.trainable_variables)
    weights = model.get_weights()
    state = [v.numpy() for v in model.optimizer.variables]
    result = find_lr(model, x, y, min_lr=1e-4, max_lr=1e3, steps=100, batch_size=BATCH)
    return model, weights, state, result


def fixed_lr_loss_ratio(model, data, x, y, lr: float, steps: int) -> float:
    """Final over initial full-data loss after ``steps`` batches of ``data`` at a fixed ``lr``."""
    weights = model.get_weights()
    start = model.evaluate(x, y, batch_size=len(x), verbose=0)
    model.optimizer.learning_rate = lr
    model.fit(data.repeat().take(steps), verbose=0, shuffle=False)
    end = model.evaluate(x, y, batch_size=len(x), verbose=0)
    model.set_weights(weights)
    return float(end / start)


def test_classification_has_this_good_lr_range():
    x, y = blobs()
    model = softmax_regression()
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(BATCH)
    ratios = {
        lr: fixed_lr_loss_ratio(model, data, x, y, lr, FIXED_STEPS)
        for lr in (GOOD_LOW / 10, GOOD_LOW, GOOD_HIGH)
    }
    assert ratios[GOOD_LOW / 10] > 0.25 and ratios[GOOD_LOW] < 0.25 and ratios[GOOD_HIGH] < 0.25


def least_squares(n: int = 128, dim: int = 4) -> tuple[np.ndarray, np.ndarray, float]:
    """Linear data with a little noise, and 2 / lambda_max: full-batch GD's stability limit."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, dim)).astype("float32")
    y = (x @ rng.normal(size=(dim, 1)) + 1.0 + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    design = np.hstack([x, np.ones((n, 1))])  # the bias is a weight on a constant input
    hessian = 2 / n * design.T @ design  # of the mean squared error
    return x, y, float(2 / np.linalg.eigvalsh(hessian).max())


def linear_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    return model


def test_least_squares_suggestion_lies_below_the_divergence_limit():
    x, y, limit = least_squares()
    model = linear_model()
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x))
    ratios = {f: fixed_lr_loss_ratio(model, data, x, y, f * limit, 50) for f in (0.03, 0.9, 1.1)}
    assert ratios[0.03] < 0.25 and ratios[0.9] < 0.25 and ratios[1.1] > 1e3  # the edges hold
    result = find_lr(model, x, y, min_lr=1e-4, max_lr=10.0, steps=100, batch_size=len(x))
    assert 0.03 * limit <= result.suggested_lr < limit
    assert result.stopped_early  # it blew up above the limit


def test_suggested_lr_lies_in_the_good_range(finder_run):
    _, _, _, result = finder_run
    assert GOOD_LOW <= result.suggested_lr <= GOOD_HIGH
    # the smoothed loss fell before the suggestion and the minimum lies above it
    below = result.lrs <= result.suggested_lr
    assert result.smoothed[below][-1] < result.smoothed[0]
    assert result.suggested_lr < result.min_loss_lr


def test_learning_rate_ramps_exponentially_and_stops_when_the_loss_blows_up(finder_run):
    _, _, _, result = finder_run
    assert result.lrs[0] == pytest.approx(1e-4)
    ratios = result.lrs[1:] / result.lrs[:-1]
    np.testing.assert_allclose(ratios, (1e3 / 1e-4) ** (1 / 99), rtol=1e-9)
    assert result.stopped_early and len(result.lrs) < 100
    assert len(result.losses) == len(result.smoothed) == len(result.lrs)
    finite = result.smoothed[np.isfinite(result.smoothed)]
    assert not np.isfinite(result.smoothed[-1]) or finite[-1] > 4 * finite.min()


def test_model_weights_and_optimizer_state_are_restored(finder_run):
    model, weights, state, _ = finder_run
    assert same_state(model, weights, state)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)
    assert int(model.optimizer.iterations) == 0


def test_recorded_losses_are_per_batch_not_running_means():
    # At a negligible rate nothing is learnt, so each step's loss is the loss of its own batch.
    x, y = blobs(96)
    model = softmax_regression()
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)  # 3 batches, not shuffled
    per_batch = [float(model.evaluate(bx, by, verbose=0)) for bx, by in data]
    result = find_lr(model, data, min_lr=1e-12, max_lr=1e-11, steps=6)
    np.testing.assert_allclose(result.losses, per_batch * 2, rtol=1e-4)


def test_works_on_a_dataset_of_images_and_one_hot_labels_and_restores_batchnorm_and_adam():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (64, 8, 8, 3)).astype("float32")
    labels = np.eye(2, dtype="float32")[(images[:, :, :4].mean(axis=(1, 2, 3)) > 127).astype(int)]
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(4, 3),
            keras.layers.BatchNormalization(),  # moving statistics: non-trainable weights
            keras.layers.Flatten(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    weights = model.get_weights()
    result = find_lr(
        model,
        data,
        steps=12,
        max_lr=0.1,
        optimizer=keras.optimizers.Adam(),
        loss="categorical_crossentropy",
    )
    assert len(result.lrs) == 12 and np.isfinite(result.losses).all()
    assert 0 < result.suggested_lr <= result.lrs[-1]
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights, strict=True))
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)  # Adam's default again
    state = [v.numpy() for v in model.optimizer.variables if "learning_rate" not in v.path]
    assert len(state) > 2 and not any(np.any(v) for v in state)  # iterations, moments: fresh


def test_uncompiled_model_without_optimizer_and_loss_is_an_error():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    x, y = blobs(32)
    with pytest.raises(ValueError, match="not compiled"):
        find_lr(model, x, y, steps=4)
    with pytest.raises(ValueError, match="need labels"):
        find_lr(softmax_regression(), x, steps=4)


def test_steepest_lr_picks_the_fastest_fall_before_the_minimum():
    lrs = np.logspace(-5, 0, 11)
    smoothed = np.array([2.0, 2.0, 1.99, 1.9, 1.7, 0.8, 0.3, 0.28, 0.25, 0.6, 3.0])
    assert steepest_lr(lrs, smoothed) == pytest.approx(lrs[5])  # 1.7 -> 0.3 around it
    assert steepest_lr(lrs[:2], np.array([2.0, 1.0])) == pytest.approx(lrs[1] / 10)  # too short


def test_plot_is_written_with_the_suggestion_marked(finder_run, tmp_path):
    _, _, _, result = finder_run
    path = tmp_path / "lr_finder.png"
    fig = plot_lr_finder(result, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    marked = [line for line in ax.lines if np.allclose(line.get_xdata(), result.suggested_lr)]
    assert marked  # the vertical line (and the dot) at the suggested rate
