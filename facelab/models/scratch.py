"""FromScratch: the reference VGG-style CNN (< 700k parameters)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import keras

from facelab.models.heads import class_probabilities
from facelab.models.registry import register_model

if TYPE_CHECKING:
    from facelab.config import Experiment

# PyTorch's default (Keras': 0.99). With 0.99 the moving statistics need hundreds of steps to
# settle, so a short run on a small dataset scores chance in inference mode while training fine.
BN_MOMENTUM = 0.9
POOLINGS = ("flatten", "avg", "max")
# Five blocks: 128 px -> 4x4x128 before Flatten, 509,155 parameters (four blocks: 1.15M).
DEFAULT_FILTERS = (16, 32, 64, 128, 128)


@keras.saving.register_keras_serializable(package="facelab")
class PerImageStandardization(keras.layers.Layer):
    """Each image to zero mean and unit variance over its pixels and channels."""

    def call(self, images):
        mean = keras.ops.mean(images, axis=(1, 2, 3), keepdims=True)
        std = keras.ops.std(images, axis=(1, 2, 3), keepdims=True)
        return (images - mean) / keras.ops.maximum(std, 1.0)  # 1 grey level: flat images stay 0


def build_fromscratch(
    input_shape: Sequence[int] = (128, 128, 3),
    num_classes: int = 3,
    conv_dropout: float = 0.25,
    dense_dropout: float = 0.7,
    dense_units: int = 128,
    filters: Sequence[int] = DEFAULT_FILTERS,
    multilabel: bool = False,
    pooling: str = "flatten",
    standardize: bool = False,
) -> keras.Model:
    """FromScratch: per block Conv2D 3x3 -> ReLU -> BatchNorm -> MaxPool -> Dropout, then
    Flatten -> Dense(relu) -> Dropout -> Dense(softmax, or sigmoid when ``multilabel``).

    Takes raw 0-255 images (it rescales inside, or with ``standardize`` brings each image to
    zero mean and unit variance, so only the pattern of light counts, not its overall level).
    ``pooling`` "avg"/"max" replaces Flatten with global pooling (fewer parameters on large
    inputs, but it discards where features are).
    """
    height, width, _ = input_shape
    if not filters:
        raise ValueError("filters must name at least one block, e.g. (16, 32, 64, 128, 128)")
    if min(height, width) < 2 ** len(filters):
        raise ValueError(
            f"input_shape {tuple(input_shape)} is too small for {len(filters)} pooling blocks: "
            f"use images of at least {2 ** len(filters)} px or fewer filters"
        )
    if pooling not in POOLINGS:
        raise ValueError(f"pooling {pooling!r} unknown; choose one of {POOLINGS}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    if standardize:
        x = PerImageStandardization(name="standardize")(inputs)
    else:
        x = keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for i, n in enumerate(filters, start=1):
        x = keras.layers.Conv2D(n, 3, padding="same", name=f"block{i}_conv")(x)
        x = keras.layers.ReLU(name=f"block{i}_relu")(x)
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"block{i}_bn")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
        x = keras.layers.Dropout(conv_dropout, name=f"block{i}_dropout")(x)
    if pooling == "flatten":
        x = keras.layers.Flatten(name="flatten")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    else:
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    x = keras.layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(dense_dropout, name="dense_dropout")(x)
    outputs = class_probabilities(x, num_classes, multilabel)
    return keras.Model(inputs, outputs, name="fromscratch")


@register_model("fromscratch")
def _fromscratch_from_experiment(
    exp: Experiment, num_classes: int, multilabel: bool = False
) -> keras.Model:
    # exp.extra may hold "filters" (one entry per block), "pooling" (flatten | avg | max) and
    # "standardize" (per-image standardisation instead of /255).
    return build_fromscratch(
        input_shape=(exp.image_size, exp.image_size, 3),
        num_classes=num_classes,
        conv_dropout=exp.conv_dropout,
        dense_dropout=exp.dense_dropout,
        dense_units=exp.dense_units,
        filters=tuple(exp.extra.get("filters", DEFAULT_FILTERS)),
        multilabel=multilabel,
        pooling=exp.extra.get("pooling", "flatten"),
        standardize=bool(exp.extra.get("standardize", False)),
    )
