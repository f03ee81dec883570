"""Learning-rate range test (Smith 2017, fastai's ``lr_find``): train a few hundred steps while
the learning rate grows exponentially, record the loss, then put the model back as it was.

The suggested rate is where the smoothed loss falls fastest per decade of learning rate (the
steepest descent, looked for only before the loss's minimum): a rate at which training clearly
makes progress and is still well below the point where it blows up.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from matplotlib.figure import Figure

from facelab.plots import TRAIN_COLOUR, VAL_COLOUR, _figure, _save, _style

# Steps left out at the start when looking for the steepest descent: the first batches' losses
# are noisy and the smoothed curve has not settled yet (fastai skips 10 of 100).
SKIP_START_FRACTION = 0.1


@dataclass
class LRFinderResult:
    """One range test: per step the learning rate, the batch loss and its smoothed value."""

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggested_lr: float  # steepest descent of the smoothed loss (see the module docstring)
    min_loss_lr: float  # where the smoothed loss is lowest; too high to train at (use ~1/10)
    stopped_early: bool  # the loss blew up (or became NaN) before the last step
    info: dict[str, Any] = field(default_factory=dict)  # min_lr, max_lr, steps, beta, diverge


class LRRangeTest(keras.callbacks.Callback):
    """Sets ``model.optimizer.learning_rate`` before each batch, from ``min_lr`` to ``max_lr``
    exponentially over ``steps`` batches; stops training once the smoothed loss exceeds
    ``diverge`` times its best (or the loss is not finite)."""

    def __init__(
        self, min_lr: float, max_lr: float, steps: int, beta: float = 0.98, diverge: float = 4.0
    ) -> None:
        super().__init__()
        self.min_lr, self.max_lr, self.steps = float(min_lr), float(max_lr), int(steps)
        self.beta, self.diverge = float(beta), float(diverge)
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.stopped_early = False
        self._average = 0.0
        self._best = math.inf

    def lr_at(self, step: int) -> float:
        """The learning rate of 0-based ``step``: ``min_lr * (max_lr / min_lr) ** (step / (steps - 1))``."""
        fraction = step / (self.steps - 1) if self.steps > 1 else 1.0
        return self.min_lr * (self.max_lr / self.min_lr) ** fraction

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        # Keras logs the epoch's running mean; reset, so the batch-end loss is this batch's alone.
        self.model.reset_metrics()
        self.model.optimizer.learning_rate = self.lr_at(len(self.lrs))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("loss", math.nan))
        self.lrs.append(self.lr_at(len(self.lrs)))
        self.losses.append(loss)
        if not math.isfinite(loss):
            self.smoothed.append(math.nan)
            self.stopped_early = self.model.stop_training = True
            return
        # Exponential moving average with bias correction (Adam's), as fastai smooths.
        self._average = self.beta * self._average + (1 - self.beta) * loss
        smooth = self._average / (1 - self.beta ** len(self.losses))
        self.smoothed.append(smooth)
        self._best = min(self._best, smooth)
        if smooth > self.diverge * self._best and len(self.losses) < self.steps:
            self.stopped_early = self.model.stop_training = True


def steepest_lr(lrs: np.ndarray, smoothed: np.ndarray, skip_start: int = 0) -> float:
    """The rate where ``smoothed`` falls fastest against log10(lr), between step ``skip_start``
    and the curve's minimum; the minimum's rate / 10 when that stretch is under three points."""
    lrs, smoothed = np.asarray(lrs, dtype=float), np.asarray(smoothed, dtype=float)
    finite = np.isfinite(smoothed)
    lrs, smoothed = lrs[finite], smoothed[finite]
    if not len(lrs):
        raise ValueError("no finite loss was recorded: lower min_lr or check the data and loss")
    lowest = int(np.argmin(smoothed))
    start = min(skip_start, lowest)
    if lowest - start < 2:
        return float(lrs[lowest] / 10)
    slope = np.gradient(smoothed, np.log10(lrs))
    return float(lrs[start + int(np.argmin(slope[start : lowest + 1]))])


def find_lr(
    model: keras.Model,
    x: Any,
    y: Any = None,
    *,
    min_lr: float = 1e-7,
    max_lr: float = 1.0,
    steps: int = 200,
    batch_size: int = 32,
    beta: float = 0.98,
    diverge: float = 4.0,
    optimizer: keras.optimizers.Optimizer | str | None = None,
    loss: Any = None,
    seed: int = 0,
    verbose: int | str = 0,
) -> LRFinderResult:
    """Range test on ``x``: a batched tf.data dataset of (images, labels), or arrays ``x, y``
    (shuffled, ``batch_size``). Uses the model's compiled optimizer and loss (or compiles with
    ``optimizer`` and ``loss``); the weights and optimizer state are restored afterwards."""
    import tensorflow as tf

    if not 0 < min_lr < max_lr:
        raise ValueError(f"need 0 < min_lr < max_lr, got min_lr={min_lr}, max_lr={max_lr}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2 to ramp the learning rate, got {steps}")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta (loss smoothing) must be in [0, 1), got {beta}")
    if diverge <= 1.0:
        raise ValueError(f"diverge must be > 1 (a multiple of the best loss), got {diverge}")
    if optimizer is not None or loss is not None:
        if optimizer is None or loss is None:
            raise ValueError("pass both optimizer= and loss= to compile, or neither")
        model.compile(optimizer=optimizer, loss=loss)
    elif not getattr(model, "compiled", False) or model.optimizer is None:
        raise ValueError(
            "the model is not compiled: compile it first (find_lr uses its optimizer and loss) "
            "or pass optimizer= and loss="
        )

    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise ValueError("a tf.data dataset carries its labels: pass y=None")
        data = x
    else:
        if y is None:
            raise ValueError("arrays need labels: call find_lr(model, images, labels)")
        x, y = np.asarray(x), np.asarray(y)
        if len(x) != len(y) or not len(x):
            raise ValueError(f"x and y must be non-empty and equally long, got {len(x)}, {len(y)}")
        data = tf.data.Dataset.from_tensor_slices((x, y))
        data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    data = data.repeat().take(steps)  # a small dataset is cycled through

    opt = model.optimizer
    if not opt.built:
        opt.build(model.trainable_variables)  # so its fresh state can be put back
    weights = model.get_weights()
    state = [np.array(v.numpy()) for v in opt.variables]
    ramp = LRRangeTest(min_lr, max_lr, steps, beta, diverge)
    try:
        try:
            opt.learning_rate = min_lr
        except TypeError as error:
            raise ValueError(
                "the optimizer's learning rate is a schedule, which find_lr cannot set: "
                "compile with a float learning_rate for the range test"
            ) from error
        model.fit(data, epochs=1, callbacks=[ramp], verbose=verbose, shuffle=False)
    finally:
        model.set_weights(weights)
        for variable, value in zip(opt.variables, state, strict=True):
            variable.assign(value)
        model.stop_training = False
    if not ramp.lrs:
        raise ValueError("the dataset yielded no batch: check that it is batched and not empty")
    lrs, smoothed = np.array(ramp.lrs), np.array(ramp.smoothed)
    finite = np.isfinite(smoothed)
    if not finite.any():
        raise ValueError("the loss was not finite from the first step: check the data and loss")
    return LRFinderResult(
        lrs=lrs,
        losses=np.array(ramp.losses),
        smoothed=smoothed,
        suggested_lr=steepest_lr(lrs, smoothed, int(SKIP_START_FRACTION * len(lrs))),
        min_loss_lr=float(lrs[finite][np.argmin(smoothed[finite])]),
        stopped_early=ramp.stopped_early,
        info={"min_lr": min_lr, "max_lr": max_lr, "steps": steps, "beta": beta, "diverge": diverge},
    )


def plot_lr_finder(
    result: LRFinderResult, path: str | os.PathLike, title: str = "learning-rate range test"
) -> Figure:
    """Loss against learning rate (log axis): batch losses, their smoothed curve, the suggestion."""
    lrs, losses, smoothed = result.lrs, result.losses, result.smoothed
    with _style():
        fig = _figure(6.5, 4)
        ax = fig.subplots()
        ax.plot(lrs, losses, color=TRAIN_COLOUR, alpha=0.3, linewidth=1, label="batch loss")
        ax.plot(lrs, smoothed, color=TRAIN_COLOUR, linewidth=2, label="smoothed loss")
        ax.axvline(result.suggested_lr, linestyle="--", color=VAL_COLOUR, linewidth=1.5)
        at = np.interp(np.log10(result.suggested_lr), np.log10(lrs), np.nan_to_num(smoothed))
        ax.plot(
            [result.suggested_lr],
            [at],
            "o",
            color=VAL_COLOUR,
            label=f"suggested lr {result.suggested_lr:.2g}",
        )
        finite = smoothed[np.isfinite(smoothed)]
        if len(finite):  # cut the blow-up off, or it squashes the descent into a flat line
            low, high = float(finite.min()), float(max(finite[: np.argmin(finite) + 1].max(), 0))
            span = max(high - low, 1e-12)
            ax.set_ylim(low - 0.05 * span, high + 0.5 * span)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.legend(loc="best")
        fig.suptitle(title + (" (stopped: the loss blew up)" if result.stopped_early else ""))
        _save(fig, path)
    return fig
