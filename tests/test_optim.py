"""AdaBound/AMSBound against a NumPy transcription of the paper's algorithm, and in real use."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from facelab.config import Experiment
from facelab.optim import AdaBound, make_optimizer

STEPS = 200


def numpy_adabound(
    w,
    grad,
    lrs,
    final_lr=0.1,
    gamma=1e-3,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-8,
    l2=0.0,
    amsbound=False,
):
    """Algorithm 2 of Luo et al. (ICLR 2019) as in the authors' PyTorch code, in float64.

    ``lrs[t - 1]`` is the learning rate at step t; ``final_lr`` is scaled by lr / lrs[0].
    Returns the weights after every step and how often each bound clipped a step.
    """
    m, v, v_max = np.zeros_like(w), np.zeros_like(w), np.zeros_like(w)
    trajectory, clipped = [], {"lower": 0, "upper": 0}
    for t, lr in enumerate(lrs, start=1):
        g = grad(w) + l2 * w
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        v_max = np.maximum(v_max, v)
        denom = np.sqrt(v_max if amsbound else v) + epsilon
        step_size = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        final = final_lr * lr / lrs[0]
        lower = final * (1 - 1 / (gamma * t + 1))
        upper = final * (1 + 1 / (gamma * t))
        raw = step_size / denom
        clipped["lower"] += int((raw < lower).sum())
        clipped["upper"] += int((raw > upper).sum())
        w = w - np.clip(raw, lower, upper) * m
        trajectory.append(w)
    return np.array(trajectory), clipped


def quadratic_problem():
    """f(w) = 0.5 (w - w*)^T H (w - w*) with a rotated Hessian of condition number 1e4."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    hessian = q @ np.diag([100.0, 3.0, 0.1, 0.01]) @ q.T
    optimum = rng.normal(size=4)
    return (lambda w: hessian @ (w - optimum)), rng.normal(size=4) * 3


def logistic_problem():
    """Logistic regression on a fixed random dataset, one mini-batch of 16 per step."""
    rng = np.random.default_rng(1)
    x = np.hstack([rng.normal(size=(64, 5)) * [1.0, 5.0, 0.2, 1.0, 1.0], np.ones((64, 1))])
    y = (x @ rng.normal(size=6) + rng.normal(size=64) > 0).astype(np.float64)
    step = {"n": 0}

    def grad(w):
        batch = slice(16 * (step["n"] % 4), 16 * (step["n"] % 4 + 1))
        step["n"] += 1
        p = 1 / (1 + np.exp(-x[batch] @ w))
        return x[batch].T @ (p - y[batch]) / 16

    return grad, np.zeros(6)


def run_keras(optimizer, w0, grad, lrs):
    """Step ``optimizer`` on a float64 variable with NumPy gradients; the weights after each step."""
    variable = keras.Variable(w0, dtype="float64")
    trajectory = []
    for lr in lrs:
        if float(optimizer.learning_rate.numpy()) != np.float32(lr):
            optimizer.learning_rate = lr
        gradient = keras.ops.convert_to_tensor(grad(variable.numpy()), dtype="float64")
        optimizer.apply_gradients([(gradient, variable)])
        trajectory.append(variable.numpy())
    return np.array(trajectory)


def float32(lr):
    # Keras keeps the learning rate in a float32 variable; the reference uses the same value.
    return float(np.float32(lr))


# (problem, hyperparameters, the bounds that clip some steps within 200 steps)
CASES = {
    "quadratic-defaults": (quadratic_problem, {}, {"lower"}),
    "logistic-fast-bounds": (
        logistic_problem,
        {"gamma": 0.05, "final_lr": 0.05},
        {"lower", "upper"},
    ),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("amsbound", [False, True])
@pytest.mark.parametrize("l2", [0.0, 1e-2])
def test_adabound_steps_match_numpy_algorithm_in_float64(case, amsbound, l2):
    problem, hyper, bounds = CASES[case]
    lrs = [float32(0.01)] * STEPS
    grad, w0 = problem()
    expected, clipped = numpy_adabound(w0, grad, lrs, l2=l2, amsbound=amsbound, **hyper)
    grad, w0 = problem()
    optimizer = AdaBound(learning_rate=0.01, l2=l2, amsbound=amsbound, **hyper)
    actual = run_keras(optimizer, w0, grad, lrs)
    assert actual.dtype == np.float64
    assert {bound for bound, count in clipped.items() if count} == bounds
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-9)


def test_lowering_the_learning_rate_lowers_the_bounds_too():
    lrs = [float32(0.01)] * 100 + [float32(0.001)] * 100  # as ReduceLROnPlateau does
    grad, w0 = quadratic_problem()
    expected, _ = numpy_adabound(w0, grad, lrs)
    grad, w0 = quadratic_problem()
    actual = run_keras(AdaBound(learning_rate=0.01), w0, grad, lrs)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-9)


def test_amsbound_and_l2_change_the_trajectory():
    lrs = [float32(0.01)] * STEPS
    runs = {}
    for amsbound, l2 in [(False, 0.0), (True, 0.0), (False, 1e-2)]:
        grad, w0 = logistic_problem()
        runs[amsbound, l2] = run_keras(
            AdaBound(learning_rate=0.01, l2=l2, amsbound=amsbound), w0, grad, lrs
        )
    assert np.abs(runs[True, 0.0] - runs[False, 0.0]).max() > 1e-4
    assert np.abs(runs[False, 1e-2] - runs[False, 0.0]).max() > 1e-4


def test_get_config_round_trips():
    optimizer = AdaBound(
        learning_rate=0.003,
        final_lr=0.05,
        gamma=2e-3,
        beta_1=0.8,
        beta_2=0.99,
        epsilon=1e-7,
        l2=1e-4,
        amsbound=True,
        clipnorm=1.0,
    )
    config = optimizer.get_config()
    assert AdaBound.from_config(config).get_config() == config
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, AdaBound)
    assert restored.get_config() == config
    assert config["l2"] == 1e-4 and config["weight_decay"] is None and config["amsbound"]


def test_a_learning_rate_schedule_trains_and_sets_the_base_lr():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.02, decay_steps=4, decay_rate=0.5)
    optimizer = AdaBound(learning_rate=schedule)
    assert optimizer.base_lr == pytest.approx(0.02)
    x, y = tiny_data()
    model = tiny_classifier()
    model.compile(optimizer, "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(0.01)
    restored = AdaBound.from_config(keras.optimizers.serialize(optimizer)["config"])
    assert restored.base_lr == pytest.approx(0.02)


def test_invalid_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="beta_2"):
        AdaBound(beta_2=1.0)
    with pytest.raises(ValueError, match="final_lr"):
        AdaBound(final_lr=0.0)


def tiny_classifier():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


def tiny_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    return x, np.argmax(x[:, :3] + 0.5 * x[:, 3:], axis=1)


@pytest.mark.parametrize("amsbound", [False, True])
def test_fit_with_adabound_reduces_the_loss(amsbound):
    x, y = tiny_data()
    model = tiny_classifier()
    model.compile(
        AdaBound(learning_rate=0.01, amsbound=amsbound), "sparse_categorical_crossentropy"
    )
    history = model.fit(x, y, epochs=15, batch_size=16, verbose=0).history["loss"]
    assert history[-1] < 0.8 * history[0]


@pytest.mark.parametrize("extension", ["keras", "h5"])
def test_trained_model_saves_and_loads_without_custom_objects(tmp_path, extension):
    x, y = tiny_data()
    model = tiny_classifier()
    model.compile(
        AdaBound(learning_rate=0.01, l2=1e-3, amsbound=True), "sparse_categorical_crossentropy"
    )
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    path = tmp_path / f"model.{extension}"
    model.save(path)

    loaded = keras.models.load_model(path)
    assert np.abs(loaded.predict(x, verbose=0) - model.predict(x, verbose=0)).max() < 1e-5
    assert isinstance(loaded.optimizer, AdaBound)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    uncompiled = keras.models.load_model(path, compile=False)
    assert np.abs(uncompiled.predict(x, verbose=0) - model.predict(x, verbose=0)).max() < 1e-5


def test_keras_format_restores_the_optimizer_state(tmp_path):
    x, y = tiny_data()
    model = tiny_classifier()
    model.compile(AdaBound(learning_rate=0.01, amsbound=True), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    model.save(tmp_path / "model.keras")

    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert int(loaded.optimizer.iterations.numpy()) == 8
    saved = [v.numpy() for v in model.optimizer.variables]
    restored = [v.numpy() for v in loaded.optimizer.variables]
    assert len(restored) == len(saved)
    for a, b in zip(restored, saved, strict=True):
        np.testing.assert_array_equal(a, b)
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)  # training resumes


@pytest.mark.parametrize(
    "name, cls",
    [
        ("adabound", AdaBound),
        ("amsbound", AdaBound),
        ("adam", keras.optimizers.Adam),
        ("nadam", keras.optimizers.Nadam),
        ("sgd", keras.optimizers.SGD),
    ],
)
def test_make_optimizer_builds_the_experiment_optimizer(name, cls):
    exp = Experiment(
        optimizer=name, lr=0.005, beta_1=0.8, epsilon=1e-7, momentum=0.5, weight_decay=1e-4
    )
    optimizer = make_optimizer(exp)
    config = optimizer.get_config()
    assert type(optimizer) is cls
    assert config["learning_rate"] == pytest.approx(0.005)
    if name in ("adabound", "amsbound"):
        assert config["amsbound"] == (name == "amsbound")
        assert config["l2"] == 1e-4 and config["weight_decay"] is None
        assert config["beta_1"] == 0.8 and config["final_lr"] == exp.final_lr
    elif name == "sgd":
        assert config["momentum"] == 0.5 and config["nesterov"] is False
        assert config["weight_decay"] == 1e-4
    else:
        assert config["beta_1"] == 0.8 and config["epsilon"] == 1e-7
        assert config["weight_decay"] == 1e-4
