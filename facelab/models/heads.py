"""Classification heads shared by every backbone, as configurations rather than copies.

A head is pooling -> N x (Dense(relu, L2) -> Dropout) -> Dense(classes). The reference
orientation/light head (GAP -> Dense 512 -> Dropout -> Dense 128 -> Dropout -> softmax) and the
reference gender head (Dense 512/512/512, dropout 0.5/0.5/0, L2 1e-3) are two settings of it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras

if TYPE_CHECKING:
    from facelab.config import Experiment

HEAD_KINDS = ("reference", "gender")
POOLINGS = ("avg", "max", "flatten")
# exp.extra keys a head reads; "head" picks the kind, the others override its settings.
HEAD_KEYS = ("head", "units", "dropouts", "l2", "pooling")


@dataclass(frozen=True)
class HeadConfig:
    """A head: ``pooling``, then one Dense(``units[i]``, relu, L2 ``l2``) -> Dropout(``dropouts[i]``)
    per entry (a dropout of 0 adds no layer), then Dense(classes)."""

    units: tuple[int, ...] = (512, 128)
    dropouts: tuple[float, ...] = (0.5, 0.5)
    l2: float = 0.0
    pooling: str = "avg"

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", tuple(int(u) for u in self.units))
        object.__setattr__(self, "dropouts", tuple(float(d) for d in self.dropouts))
        if len(self.units) != len(self.dropouts):
            raise ValueError(
                f"head: {len(self.units)} units {list(self.units)} but {len(self.dropouts)} "
                f"dropouts {list(self.dropouts)}; give one dropout rate per dense layer (0: none)"
            )
        if any(u < 1 for u in self.units):
            raise ValueError(f"head: units must be positive integers, got {list(self.units)}")
        if any(not 0.0 <= d < 1.0 for d in self.dropouts):
            raise ValueError(f"head: dropout rates must be in [0, 1), got {list(self.dropouts)}")
        if self.l2 < 0:
            raise ValueError(f"head: l2 must be >= 0, got {self.l2}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"head: pooling {self.pooling!r} unknown; choose one of {POOLINGS}")


def reference_head(
    dense_dropout: float = 0.5, head_dropout: float = 0.5, units: Sequence[int] = (512, 128)
) -> HeadConfig:
    """The orientation/light head: GAP -> Dense 512 -> Dropout -> Dense 128 -> Dropout."""
    return HeadConfig(units=tuple(units), dropouts=(dense_dropout, head_dropout), l2=0.0)


def gender_head(
    units: Sequence[int] = (512, 512, 512),
    dropouts: Sequence[float] = (0.5, 0.5, 0.0),
    l2: float = 1e-3,
) -> HeadConfig:
    """The gender head: GAP -> N dense layers with per-layer units, dropout and L2 (the best
    setting of the reference sweeps by default)."""
    return HeadConfig(units=tuple(units), dropouts=tuple(dropouts), l2=l2)


def head_from_experiment(exp: Experiment) -> HeadConfig:
    """The head an Experiment asks for: ``exp.extra["head"]`` ("reference" or "gender"), with
    ``units``/``dropouts``/``l2``/``pooling`` in ``exp.extra`` overriding its settings."""
    return head_from_options(exp.extra, exp.dense_dropout, exp.head_dropout, exp.dense_units)


def head_from_options(
    options: Mapping[str, Any],
    dense_dropout: float = 0.5,
    head_dropout: float = 0.5,
    dense_units: int = 128,
) -> HeadConfig:
    """The head named by ``options["head"]`` (default "reference": units 512 and
    ``dense_units``, dropouts ``dense_dropout`` and ``head_dropout``) with overrides applied."""
    kind = options.get("head", "reference")
    if kind == "reference":
        config = reference_head(dense_dropout, head_dropout, units=(512, dense_units))
    elif kind == "gender":
        config = gender_head()
    else:
        raise ValueError(f"head {kind!r} unknown; choose one of {HEAD_KINDS} (extra['head'])")
    overrides = {
        key: options[key] for key in ("units", "dropouts", "l2", "pooling") if key in options
    }
    return dataclasses.replace(config, **overrides)


def add_head(
    features: keras.KerasTensor,
    num_classes: int,
    config: HeadConfig | None = None,
    multilabel: bool = False,
) -> keras.KerasTensor:
    """Apply the head to a backbone's feature map; returns class probabilities (softmax, or
    independent sigmoids when ``multilabel``), always float32."""
    config = config or HeadConfig()
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if config.pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
    elif config.pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="head_pool")(features)
    else:
        x = keras.layers.Flatten(name="head_flatten")(features)
    regularizer = keras.regularizers.L2(config.l2) if config.l2 else None
    for i, (units, rate) in enumerate(zip(config.units, config.dropouts, strict=True), start=1):
        x = keras.layers.Dense(
            units, activation="relu", kernel_regularizer=regularizer, name=f"head_dense{i}"
        )(x)
        if rate:
            x = keras.layers.Dropout(rate, name=f"head_dropout{i}")(x)
    return class_probabilities(x, num_classes, multilabel)


def class_probabilities(
    x: keras.KerasTensor, num_classes: int, multilabel: bool = False
) -> keras.KerasTensor:
    """The output layer of every classifier: Dense(classes) with softmax (sigmoid when
    ``multilabel``), named "predictions", float32 even under mixed precision."""
    return keras.layers.Dense(
        num_classes,
        activation="sigmoid" if multilabel else "softmax",
        dtype="float32",  # probabilities stay float32 under mixed precision
        name="predictions",
    )(x)
