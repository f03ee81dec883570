"""Model registry: ``exp.model`` name -> builder(exp, num_classes, multilabel)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import keras

if TYPE_CHECKING:
    from facelab.config import Experiment

ModelBuilder = Callable[["Experiment", int, bool], keras.Model]

# name -> builder(exp, num_classes, multilabel). Modules add theirs with @register_model.
MODEL_BUILDERS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: make ``builder(exp, num_classes, multilabel)`` buildable as ``exp.model=name``."""

    def add(builder: ModelBuilder) -> ModelBuilder:
        MODEL_BUILDERS[name] = builder
        return builder

    return add


def build_model(exp: Experiment, num_classes: int, multilabel: bool = False) -> keras.Model:
    """The (uncompiled) model named by ``exp.model`` for ``num_classes`` outputs."""
    try:
        builder = MODEL_BUILDERS[exp.model]
    except KeyError:
        raise ValueError(
            f"model {exp.model!r} unknown; known models: {sorted(MODEL_BUILDERS)}"
        ) from None
    return builder(exp, num_classes, multilabel)
