"""Losses beyond Keras' own: a class-weighted binary cross-entropy for rare attributes."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="facelab")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy with per-attribute weights for absent (row 0) and present (row 1)
    values, so a rare attribute counts as much as a common one."""

    def __init__(
        self,
        weights: Sequence[Sequence[float]] | np.ndarray,
        name: str = "weighted_binary_crossentropy",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.weights = np.asarray(weights, dtype=np.float32)
        if self.weights.ndim != 2 or self.weights.shape[0] != 2:
            raise ValueError(
                f"weights must have shape (2, attributes): negatives' and positives' weights, "
                f"got {self.weights.shape}"
            )

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        eps = keras.config.epsilon()
        p = ops.clip(y_pred, eps, 1.0 - eps)
        w_neg = ops.convert_to_tensor(self.weights[0], dtype=y_pred.dtype)
        w_pos = ops.convert_to_tensor(self.weights[1], dtype=y_pred.dtype)
        losses = -(w_pos * y_true * ops.log(p) + w_neg * (1.0 - y_true) * ops.log(1.0 - p))
        return ops.mean(losses, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "weights": self.weights.tolist()}
