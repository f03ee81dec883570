"""The Levi & Hassner (2015) age/gender CNN, with a serialisable local response normalisation.

G. Levi and T. Hassner, "Age and Gender Classification using Convolutional Neural Networks",
CVPR workshops 2015: three conv layers, max pooling after each, LRN after the first two, then
two fully connected layers of 512 with dropout 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras
from keras import ops

from facelab.models.heads import class_probabilities
from facelab.models.registry import register_model

if TYPE_CHECKING:
    from facelab.config import Experiment

# (filters, kernel, stride, conv padding, LRN after its pooling). conv1 is unpadded as in the
# paper's Caffe model; conv2 and conv3 are padded there by 2 and 1, i.e. "same".
CONV_LAYERS = ((96, 7, 4, "valid", True), (256, 5, 1, "same", True), (384, 3, 1, "same", False))
POOL_SIZE, POOL_STRIDE = 3, 2
DEFAULT_DROPOUT = 0.5
DENSE_UNITS = 512
# The paper's (Caffe) LRN: local_size 5, alpha 1e-4, beta 0.75, k 1.
CAFFE_LRN = {"local_size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0}


@keras.saving.register_keras_serializable(package="facelab")
class LocalResponseNormalization(keras.layers.Layer):
    """Across-channel LRN, TensorFlow's convention (``tf.nn.local_response_normalization``):
    ``y_c = x_c / (bias + alpha * sum_{|c'-c| <= depth_radius} x_c'^2) ** beta``.

    ``alpha`` here multiplies the plain sum; Caffe (and the paper) divide theirs by the window
    size ``2 * depth_radius + 1``: use :meth:`from_caffe` for Caffe's numbers. Channels last.
    """

    def __init__(
        self,
        depth_radius: int = 2,
        bias: float = 1.0,
        alpha: float = CAFFE_LRN["alpha"] / CAFFE_LRN["local_size"],
        beta: float = 0.75,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if int(depth_radius) != depth_radius or depth_radius < 0:
            raise ValueError(f"depth_radius must be an integer >= 0, got {depth_radius}")
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    @classmethod
    def from_caffe(
        cls, local_size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, **kwargs
    ) -> LocalResponseNormalization:
        """The layer equal to Caffe's ACROSS_CHANNELS LRN (``alpha / local_size`` per square)."""
        if local_size < 1 or local_size % 2 == 0:
            raise ValueError(f"Caffe's local_size must be odd and >= 1, got {local_size}")
        return cls((local_size - 1) // 2, k, alpha / local_size, beta, **kwargs)

    def call(self, inputs):
        # float32 inside: under mixed precision x**2 overflows float16 above 256.
        x = ops.cast(inputs, "float32")
        squares = ops.square(x)
        r = self.depth_radius
        channels = squares.shape[-1]
        padded = ops.pad(squares, [[0, 0]] * (len(squares.shape) - 1) + [[r, r]])
        window = padded[..., 0:channels]
        for shift in range(1, 2 * r + 1):
            window = window + padded[..., shift : shift + channels]
        scale = ops.power(self.bias + self.alpha * window, -self.beta)
        return ops.cast(x * scale, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "depth_radius": self.depth_radius,
            "bias": self.bias,
            "alpha": self.alpha,
            "beta": self.beta,
        }


def _pooled_side(side: int) -> int:
    """Side after max pooling 3x3 stride 2, "same": Caffe's ceil mode for even sides."""
    return -(-side // POOL_STRIDE)


def feature_sides(side: int) -> list[int]:
    """The side of each conv layer's input and output for a square ``side`` px input."""
    sides = [side]
    for _, kernel, stride, padding, _ in CONV_LAYERS:
        side = (side - kernel) // stride + 1 if padding == "valid" else -(-side // stride)
        sides.append(side)  # conv output: the pooling's input
        side = _pooled_side(side)
        sides.append(side)
    return sides


def min_input_side() -> int:
    """The smallest input side at which every pooling sees at least one full 3x3 window."""
    side = CONV_LAYERS[0][1]
    while min(feature_sides(side)[1::2]) < POOL_SIZE:
        side += 1
    return side


def build_hassner(
    input_shape: Sequence[int] = (227, 227, 3),
    num_classes: int = 2,
    dropout: float = DEFAULT_DROPOUT,
    multilabel: bool = False,
) -> keras.Model:
    """Levi & Hassner: per layer Conv2D(relu) -> MaxPool 3x3/2 (-> LRN for the first two), then
    Flatten -> 2 x (Dense 512 relu -> Dropout) -> Dense(softmax, or sigmoid when ``multilabel``).

    Takes raw 0-255 images and rescales them inside. The paper's input is 227 px (a crop of 256).
    Pooling pads "same", which gives Caffe's ceil-mode sizes at 227 px (56 -> 28 -> 14 -> 7);
    11.4M parameters at 224 or 227 px, as the paper's Caffe model.
    """
    height, width, _ = input_shape
    smallest = min_input_side()
    if min(height, width) < smallest:
        raise ValueError(
            f"input_shape {tuple(input_shape)} is too small for the Hassner CNN's three "
            f"poolings: use images of at least {smallest} px (the paper uses 227 px)"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for i, (filters, kernel, stride, padding, lrn) in enumerate(CONV_LAYERS, start=1):
        x = keras.layers.Conv2D(
            filters, kernel, strides=stride, padding=padding, activation="relu", name=f"conv{i}"
        )(x)
        x = keras.layers.MaxPooling2D(POOL_SIZE, POOL_STRIDE, padding="same", name=f"pool{i}")(x)
        if lrn:
            x = LocalResponseNormalization.from_caffe(**CAFFE_LRN, name=f"norm{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for i in (1, 2):
        x = keras.layers.Dense(DENSE_UNITS, activation="relu", name=f"fc{i}")(x)
        x = keras.layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
    outputs = class_probabilities(x, num_classes, multilabel)
    return keras.Model(inputs, outputs, name="hassnercnn")


@register_model("hassnercnn")
def _hassner_from_experiment(
    exp: Experiment, num_classes: int, multilabel: bool = False
) -> keras.Model:
    # exp.extra may hold "dropout" (after each FC layer; the paper's 0.5 by default).
    return build_hassner(
        input_shape=(exp.image_size, exp.image_size, 3),
        num_classes=num_classes,
        dropout=float(exp.extra.get("dropout", DEFAULT_DROPOUT)),
        multilabel=multilabel,
    )
