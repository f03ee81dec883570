"""AdaBound and AMSBound for Keras 3, and the optimizer named by an Experiment.

keras-adabound targets Keras 2 and fails on Keras 3, so facelab carries its own
implementation of Luo et al., "Adaptive Gradient Methods with Dynamic Bound of Learning
Rate" (ICLR 2019), following the authors' reference code (github.com/Luolc/AdaBound).

Importing this module registers AdaBound, so ``keras.models.load_model`` of a model compiled
with it needs no ``custom_objects``; without the import, load with ``compile=False``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras
from keras import ops

if TYPE_CHECKING:
    from facelab.config import Experiment


@keras.saving.register_keras_serializable(package="facelab")
class AdaBound(keras.optimizers.Optimizer):
    """AdaBound (Adam whose per-weight step is clipped into bounds converging to SGD's).

    One step at iteration ``t`` (1-based), as in the authors' code:

        g = gradient + l2 * w
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g**2          (AMSBound: v_max = max(v_max, v))
        step = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)
        final = final_lr * lr / base_lr
        lower = final * (1 - 1 / (gamma * t + 1));  upper = final * (1 + 1 / (gamma * t))
        w = w - clip(step / (sqrt(v) + epsilon), lower, upper) * m

    Args:
        learning_rate: Adam's step size: a float, a `LearningRateSchedule` or a callable.
        final_lr: the SGD learning rate the bounds converge to.
        gamma: convergence speed of the bounds.
        beta_1, beta_2, epsilon: as in Adam (``epsilon`` is added to ``sqrt(v)``).
        l2: L2 penalty added to the gradient (``weight_decay`` of the authors' PyTorch code).
            It is not Keras' own ``weight_decay`` argument, which is decoupled (AdamW-style)
            weight decay applied by the base class and may also be given.
        amsbound: keep the running maximum of ``v`` (the AMSBound variant).
        base_lr: the learning rate ``final_lr`` refers to; ``final_lr`` is scaled by
            ``current lr / base_lr`` so that schedules and ReduceLROnPlateau move the bounds
            too. Defaults to the initial learning rate (a schedule's value at step 0).
        **kwargs: the base `keras.optimizers.Optimizer` arguments (``name``, ``clipnorm``,
            ``weight_decay``, ``use_ema``, ...).
    """

    def __init__(
        self,
        learning_rate: Any = 0.001,
        final_lr: float = 0.1,
        gamma: float = 1e-3,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        l2: float = 0.0,
        amsbound: bool = False,
        base_lr: float | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(learning_rate, int):
            learning_rate = float(learning_rate)
        super().__init__(learning_rate=learning_rate, name=name or "adabound", **kwargs)
        for arg, value in (("final_lr", final_lr), ("gamma", gamma), ("epsilon", epsilon)):
            if not value > 0:
                raise ValueError(f"AdaBound: {arg} must be > 0, got {value}")
        for arg, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"AdaBound: {arg} must be in [0, 1), got {value}")
        if l2 < 0:
            raise ValueError(f"AdaBound: l2 must be >= 0, got {l2}")
        if base_lr is None:
            base_lr = float(ops.convert_to_numpy(self._get_current_learning_rate()))
        if not base_lr > 0:
            raise ValueError(f"AdaBound: base_lr must be > 0, got {base_lr}")
        self.final_lr = float(final_lr)
        self.gamma = float(gamma)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.l2 = float(l2)
        self.amsbound = bool(amsbound)
        self.base_lr = float(base_lr)

    def build(self, var_list: list) -> None:
        """Create the first and second moment slots (and v_max for AMSBound)."""
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(
            var_list, ["momentum", "velocity"]
        )
        if self.amsbound:
            self._velocity_maxes = self.add_optimizer_variables(var_list, "velocity_max")

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """Apply one AdaBound/AMSBound step to ``variable``."""
        dtype = variable.dtype
        learning_rate = ops.convert_to_tensor(learning_rate)
        # base_lr rounded to the learning rate's own precision (float32 by default), so that
        # lr / base_lr is exactly 1 while the learning rate is unchanged.
        base_lr = ops.cast(
            ops.convert_to_tensor(
                self.base_lr, keras.backend.standardize_dtype(learning_rate.dtype)
            ),
            dtype,
        )
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        if self.l2:
            gradient = ops.add(gradient, ops.multiply(variable, self.l2))
        t = ops.cast(self.iterations + 1, dtype)
        index = self._get_variable_index(variable)
        m = self._momentums[index]
        v = self._velocities[index]

        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        if self.amsbound:
            v_max = self._velocity_maxes[index]
            self.assign(v_max, ops.maximum(v_max, v))
            v = v_max

        bias_1 = 1 - ops.power(ops.convert_to_tensor(self.beta_1, dtype), t)
        bias_2 = 1 - ops.power(ops.convert_to_tensor(self.beta_2, dtype), t)
        step_size = lr * ops.sqrt(bias_2) / bias_1
        final_lr = self.final_lr * lr / base_lr
        lower = final_lr * (1 - 1 / (self.gamma * t + 1))
        upper = final_lr * (1 + 1 / (self.gamma * t))
        step = ops.clip(ops.divide(step_size, ops.add(ops.sqrt(v), self.epsilon)), lower, upper)
        self.assign_sub(variable, ops.multiply(step, m))

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, for saving and `from_config`."""
        config = super().get_config()
        config.update(
            {
                "final_lr": self.final_lr,
                "gamma": self.gamma,
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "l2": self.l2,
                "amsbound": self.amsbound,
                "base_lr": self.base_lr,
            }
        )
        return config


def make_optimizer(exp: Experiment) -> keras.optimizers.Optimizer:
    """The optimizer ``exp.optimizer`` built from the Experiment's lr, betas, epsilon, ...

    ``exp.weight_decay`` is the L2 penalty added to the gradient for adabound/amsbound (as in
    the authors' code) and Keras' decoupled weight decay for adam, nadam and sgd.
    """
    lr = float(exp.lr)
    decay = float(exp.weight_decay) or None
    name = exp.optimizer.lower()
    if name in ("adabound", "amsbound"):
        return AdaBound(
            learning_rate=lr,
            final_lr=exp.final_lr,
            gamma=exp.gamma,
            beta_1=exp.beta_1,
            beta_2=exp.beta_2,
            epsilon=exp.epsilon,
            l2=exp.weight_decay,
            amsbound=name == "amsbound",
            name=name,
        )
    if name == "adam":
        return keras.optimizers.Adam(
            learning_rate=lr,
            beta_1=exp.beta_1,
            beta_2=exp.beta_2,
            epsilon=exp.epsilon,
            weight_decay=decay,
        )
    if name == "nadam":
        return keras.optimizers.Nadam(
            learning_rate=lr,
            beta_1=exp.beta_1,
            beta_2=exp.beta_2,
            epsilon=exp.epsilon,
            weight_decay=decay,
        )
    if name == "sgd":
        return keras.optimizers.SGD(
            learning_rate=lr, momentum=exp.momentum, nesterov=False, weight_decay=decay
        )
    raise ValueError(
        f"optimizer {exp.optimizer!r} unknown; choose one of adabound, amsbound, adam, nadam, sgd"
    )
