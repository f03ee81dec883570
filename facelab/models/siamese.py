"""Face verification models: the Koch-style siamese CNN and an embedding network scored by cosine.

Both saved models take a pair of images ``[a, b]`` (float32 0..255, (B, S, S, 3), the full LFW
image resized to S) and return one score per pair, (B, 1): the siamese network a probability that
the two faces are the same person, the embedding network the cosine similarity of the two faces'
embeddings. Each tower first keeps the central ``crop`` pixels (where the face is), turns them grey
and standardises each image. Every custom layer and loss is a registered Keras object, so the
models save and load as ``.keras`` and ``.h5`` with ``safe_mode``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import keras
from keras import ops

from facelab.models.registry import register_model

if TYPE_CHECKING:
    from facelab.config import Experiment

# Koch, Zemel & Salakhutdinov (2015): 64@10x10, 128@7x7, 128@4x4, 256@4x4, Dense 4096 (sigmoid);
# 38.9M parameters at 105x105. Pass these to build_siamese for the paper's network.
KOCH_FILTERS = (64, 128, 128, 256)
KOCH_KERNELS = (10, 7, 4, 4)
KOCH_DENSE = 4096
# The CPU-sized default of the Koch-style network (same layout, a quarter of the filters).
SIAMESE_FILTERS = (16, 32, 32, 64)
# Embedding tower: VGG-style blocks of two 3x3 convolutions (one in the last), max-pooled.
EMBEDDING_FILTERS = (16, 32, 64, 128)
BATCHNORM = ("before", "after", "none")  # relative to the ReLU
EMBEDDING_LOSSES = ("supcon", "contrastive", "triplet")
BN_MOMENTUM = 0.9  # see facelab.models.scratch: settles in tens of steps, not hundreds

# Defaults of the verification-specific knobs in ``Experiment.extra``.
DEFAULT_CROP = 0.5  # fraction of the (resized) LFW image kept: its central 125 of 250 px
DEFAULT_EMBEDDING_DIM = 128
DEFAULT_TEMPERATURE = 0.1
DEFAULT_MARGIN = 0.5


@keras.saving.register_keras_serializable(package="facelab")
class Standardize(keras.layers.Layer):
    """Per-image standardisation to zero mean and unit variance; with ``grey``, channels averaged first."""

    def __init__(self, grey: bool = True, epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.grey = grey
        self.epsilon = epsilon

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        if self.grey:
            images = ops.mean(images, axis=-1, keepdims=True)
        mean = ops.mean(images, axis=(1, 2, 3), keepdims=True)
        std = ops.std(images, axis=(1, 2, 3), keepdims=True)
        return (images - mean) / (std + self.epsilon)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1) if self.grey else tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "grey": self.grey, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="facelab")
class HorizontalFlip(keras.layers.Layer):
    """Mirror images left-right, always (test-time augmentation; not a random layer)."""

    def call(self, images):
        return ops.flip(images, axis=2)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


@keras.saving.register_keras_serializable(package="facelab")
class L1Distance(keras.layers.Layer):
    """Element-wise ``|a - b|`` of two feature vectors (Koch's siamese distance)."""

    def call(self, inputs):
        a, b = inputs
        return ops.abs(a - b)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


@keras.saving.register_keras_serializable(package="facelab")
class L2Normalize(keras.layers.Layer):
    """Scale each vector to unit length (embeddings on the unit sphere)."""

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, x):
        x = ops.cast(x, "float32")
        return x / ops.sqrt(
            ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), self.epsilon)
        )

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def face_preprocess(inputs, crop: int, name: str = "face") -> keras.KerasTensor:
    """Central ``crop`` x ``crop`` pixels, grey, standardised per image: (B, crop, crop, 1)."""
    height, width = inputs.shape[1:3]
    if not 1 <= crop <= min(height, width):
        raise ValueError(
            f"crop {crop} px must lie between 1 and the input side {min(height, width)} px; "
            "lower extra['crop'] or raise image_size"
        )
    x = keras.layers.CenterCrop(crop, crop, name=f"{name}_crop")(inputs)
    return Standardize(name=f"{name}_standardize")(x)


def _conv(x, filters: int, kernel: int, batchnorm: str, name: str, padding: str = "same"):
    """Conv2D + ReLU with BatchNormalization before or after the ReLU, or none."""
    x = keras.layers.Conv2D(
        filters, kernel, padding=padding, use_bias=batchnorm != "before", name=f"{name}_conv"
    )(x)
    if batchnorm == "before":
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    if batchnorm == "after":
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return x


def _check(batchnorm: str, crop: int, blocks: int, filters: Sequence[int]) -> None:
    if batchnorm not in BATCHNORM:
        raise ValueError(f"batchnorm {batchnorm!r} unknown; choose one of {BATCHNORM}")
    if not filters:
        raise ValueError("filters must name at least one block, e.g. (16, 32, 64, 128)")
    if crop < 2**blocks:
        raise ValueError(
            f"a {crop} px face is too small for {blocks} pooling steps; use a crop of at least "
            f"{2**blocks} px (raise image_size or extra['crop'])"
        )


def build_siamese(
    input_shape: Sequence[int] = (128, 128, 3),
    crop: int = 64,
    filters: Sequence[int] = SIAMESE_FILTERS,
    kernels: Sequence[int] = KOCH_KERNELS,
    dense_units: int = 512,
    batchnorm: str = "before",
    conv_dropout: float = 0.0,
    dense_dropout: float = 0.0,
    padding: str = "same",
) -> keras.Model:
    """Koch-style siamese CNN: twin conv towers, L1 distance of their features, Dense(1, sigmoid).

    Tower: per block Conv2D(k x k) -> ReLU (BatchNorm before or after it, or none) -> MaxPool (not
    after the last block) -> Dropout, then Flatten -> Dropout -> Dense(``dense_units``, sigmoid), as
    Koch et al.
    ``KOCH_FILTERS``, ``KOCH_KERNELS``, ``KOCH_DENSE``, ``crop=105``, ``batchnorm="none"`` and
    ``padding="valid"`` give the paper's network (38.9M parameters).
    """
    if len(kernels) != len(filters):
        raise ValueError(
            f"kernels {tuple(kernels)} must give one size per block of {tuple(filters)}"
        )
    if padding not in ("same", "valid"):
        raise ValueError(f"padding {padding!r} unknown; choose 'same' or 'valid'")
    _check(batchnorm, crop, len(filters) - 1, filters)
    side = crop
    for i, k in enumerate(kernels):
        side = side - k + 1 if padding == "valid" else side
        if side < 1:
            raise ValueError(
                f"a {crop} px face is too small for kernels {tuple(kernels)} with 'valid' padding; "
                "use a larger crop or padding='same'"
            )
        side = side // 2 if i < len(kernels) - 1 else side
    image = keras.Input(shape=tuple(input_shape), name="image")
    x = face_preprocess(image, crop)
    for i, (n, k) in enumerate(zip(filters, kernels, strict=True), start=1):
        x = _conv(x, n, k, batchnorm, f"block{i}", padding)
        if i < len(filters):
            x = keras.layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
        if conv_dropout:
            x = keras.layers.Dropout(conv_dropout, name=f"block{i}_dropout")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if dense_dropout:  # before the features: dropped features would differ between the twins
        x = keras.layers.Dropout(dense_dropout, name="flatten_dropout")(x)
    x = keras.layers.Dense(dense_units, activation="sigmoid", name="features")(x)
    tower = keras.Model(image, x, name="tower")

    a = keras.Input(shape=tuple(input_shape), name="image_a")
    b = keras.Input(shape=tuple(input_shape), name="image_b")
    distance = L1Distance(name="l1_distance")([tower(a), tower(b)])
    same = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="same")(distance)
    return keras.Model([a, b], same, name="siamese")


def build_embedding_tower(
    input_shape: Sequence[int] = (128, 128, 3),
    crop: int = 64,
    filters: Sequence[int] = EMBEDDING_FILTERS,
    embedding_dim: int = DEFAULT_EMBEDDING_DIM,
    batchnorm: str = "before",
    dense_dropout: float = 0.3,
) -> keras.Model:
    """Image -> unit-length embedding: VGG-style blocks (two 3x3 convs, one in the last block),
    each max-pooled, then Flatten -> Dropout -> Dense(``embedding_dim``) -> L2 normalisation."""
    _check(batchnorm, crop, len(filters), filters)
    image = keras.Input(shape=tuple(input_shape), name="image")
    x = face_preprocess(image, crop)
    for i, n in enumerate(filters, start=1):
        x = _conv(x, n, 3, batchnorm, f"block{i}a")
        if i < len(filters):
            x = _conv(x, n, 3, batchnorm, f"block{i}b")
        x = keras.layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if dense_dropout:
        x = keras.layers.Dropout(dense_dropout, name="dropout")(x)
    x = keras.layers.Dense(embedding_dim, dtype="float32", name="embedding")(x)
    x = L2Normalize(name="l2_normalize")(x)
    return keras.Model(image, x, name="embedding_tower")


def build_embedding_scorer(tower: keras.Model, flip_average: bool = True) -> keras.Model:
    """Pair model around a trained tower: cosine similarity of the two embeddings, (B, 1).

    With ``flip_average`` each embedding is the normalised mean of the image's and its mirror's.
    """
    shape = tuple(tower.input_shape[1:])
    a = keras.Input(shape=shape, name="image_a")
    b = keras.Input(shape=shape, name="image_b")

    def embed(image, name):
        if not flip_average:
            return tower(image)
        mirrored = tower(HorizontalFlip(name=f"{name}_flip")(image))
        mean = keras.layers.Average(name=f"{name}_flip_average")([tower(image), mirrored])
        return L2Normalize(name=f"{name}_normalize")(mean)

    cosine = keras.layers.Dot(axes=1, normalize=True, dtype="float32", name="cosine")(
        [embed(a, "a"), embed(b, "b")]
    )
    return keras.Model([a, b], cosine, name="embedding")


def tower_of(model: keras.Model) -> keras.Model:
    """The shared tower inside a siamese or embedding pair model."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise ValueError(f"model {model.name!r} holds no tower; pass a facelab verification model")


@keras.saving.register_keras_serializable(package="facelab")
class SupervisedContrastiveLoss(keras.losses.Loss):
    """Supervised contrastive loss (Khosla et al. 2020) over a batch of unit embeddings.

    ``y_true`` holds each embedding's person id; every other embedding of the same person in the
    batch is a positive, all the rest are negatives (softmax over cosine / ``temperature``).
    """

    def __init__(self, temperature: float = DEFAULT_TEMPERATURE, name="supcon", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = temperature

    def call(self, y_true, y_pred):
        similarity, positive, others = _batch_similarity(y_true, y_pred)
        logits = similarity / self.temperature - (1.0 - others) * 1e9
        log_prob = logits - ops.logsumexp(logits, axis=1, keepdims=True)
        count = ops.sum(positive, axis=1)
        per_anchor = -ops.sum(positive * log_prob, axis=1) / ops.maximum(count, 1.0)
        # Anchors without a positive in the batch contribute nothing (they still serve as negatives).
        return per_anchor * ops.cast(count > 0, "float32") * _anchor_scale(count)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="facelab")
class ContrastiveLoss(keras.losses.Loss):
    """Contrastive loss (Hadsell et al. 2006) on every pair of a batch, with cosine distance.

    Same person: ``d**2``; different people: ``max(margin - d, 0)**2``, with ``d = 1 - cosine``.
    """

    def __init__(self, margin: float = DEFAULT_MARGIN, name="contrastive", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = margin

    def call(self, y_true, y_pred):
        similarity, positive, others = _batch_similarity(y_true, y_pred)
        distance = 1.0 - similarity
        negative = others - positive
        terms = positive * ops.square(distance) + negative * ops.square(
            ops.relu(self.margin - distance)
        )
        return ops.sum(terms, axis=1) / ops.maximum(ops.sum(others, axis=1), 1.0)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package="facelab")
class BatchHardTripletLoss(keras.losses.Loss):
    """Batch-hard triplet loss (Hermans et al. 2017): per anchor, its farthest positive and
    nearest negative in the batch, ``max(d_pos - d_neg + margin, 0)`` with ``d = 1 - cosine``."""

    def __init__(self, margin: float = 0.2, name="triplet", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = margin

    def call(self, y_true, y_pred):
        similarity, positive, others = _batch_similarity(y_true, y_pred)
        distance = 1.0 - similarity
        negative = others - positive
        hardest_positive = ops.max(distance * positive, axis=1)
        nearest_negative = ops.min(distance + (1.0 - negative) * 4.0, axis=1)  # d <= 2
        count = ops.sum(positive, axis=1)
        per_anchor = ops.relu(hardest_positive - nearest_negative + self.margin)
        return per_anchor * ops.cast(count > 0, "float32") * _anchor_scale(count)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


def _batch_similarity(y_true, y_pred):
    """(cosine matrix, same-person mask without the diagonal, all-but-self mask) of a batch."""
    ids = ops.reshape(ops.cast(y_true, "int32"), (-1,))
    z = ops.cast(y_pred, "float32")
    z = z / ops.sqrt(ops.maximum(ops.sum(ops.square(z), axis=1, keepdims=True), 1e-12))
    similarity = ops.matmul(z, ops.transpose(z))
    others = 1.0 - ops.eye(ops.shape(z)[0], dtype="float32")
    positive = ops.cast(ops.equal(ids[:, None], ids[None, :]), "float32") * others
    return similarity, positive, others


def _anchor_scale(count):
    """Rescale so that the mean over the batch equals the mean over anchors that have a positive."""
    has = ops.cast(count > 0, "float32")
    return ops.cast(ops.shape(has)[0], "float32") / ops.maximum(ops.sum(has), 1.0)


def embedding_loss(
    name: str, temperature: float = DEFAULT_TEMPERATURE, margin: float | None = None
):
    """The embedding loss called ``name``: supcon, contrastive or triplet."""
    if name == "supcon":
        return SupervisedContrastiveLoss(temperature)
    if name == "contrastive":
        return ContrastiveLoss(DEFAULT_MARGIN if margin is None else margin)
    if name == "triplet":
        return BatchHardTripletLoss(0.2 if margin is None else margin)
    raise ValueError(f"embedding loss {name!r} unknown; choose one of {EMBEDDING_LOSSES}")


def koch_kernels(blocks: int) -> tuple[int, ...]:
    """Koch's kernel sizes for the first ``blocks`` blocks (3 x 3 for any block beyond the fourth)."""
    return (*KOCH_KERNELS, *(3,) * max(0, blocks - len(KOCH_KERNELS)))[:blocks]


def crop_pixels(exp: Experiment) -> int:
    """The tower's face crop in pixels: ``extra['crop']`` (a fraction of image_size, or pixels)."""
    crop = exp.extra.get("crop", DEFAULT_CROP)
    return int(round(crop * exp.image_size)) if crop <= 1 else int(crop)


def siamese_from_experiment(exp: Experiment) -> keras.Model:
    """The Koch-style siamese network an Experiment describes (``extra``: crop, filters, kernels,
    batchnorm)."""
    filters = tuple(exp.extra.get("filters", SIAMESE_FILTERS))
    return build_siamese(
        input_shape=(exp.image_size, exp.image_size, 3),
        crop=crop_pixels(exp),
        filters=filters,
        kernels=tuple(exp.extra.get("kernels", koch_kernels(len(filters)))),
        dense_units=exp.dense_units,
        batchnorm=exp.extra.get("batchnorm", "before"),
        conv_dropout=exp.conv_dropout,
        dense_dropout=exp.dense_dropout,
    )


def embedding_tower_from_experiment(exp: Experiment) -> keras.Model:
    """The embedding tower an Experiment describes (``extra``: crop, filters, embedding_dim, batchnorm)."""
    return build_embedding_tower(
        input_shape=(exp.image_size, exp.image_size, 3),
        crop=crop_pixels(exp),
        filters=tuple(exp.extra.get("filters", EMBEDDING_FILTERS)),
        embedding_dim=int(exp.extra.get("embedding_dim", DEFAULT_EMBEDDING_DIM)),
        batchnorm=exp.extra.get("batchnorm", "before"),
        dense_dropout=exp.dense_dropout,
    )


@register_model("siamese")
def _siamese(exp: Experiment, num_classes: int = 2, multilabel: bool = False) -> keras.Model:
    return siamese_from_experiment(exp)


@register_model("embedding")
def _embedding(exp: Experiment, num_classes: int = 2, multilabel: bool = False) -> keras.Model:
    return build_embedding_scorer(embedding_tower_from_experiment(exp))
