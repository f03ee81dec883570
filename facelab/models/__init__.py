"""Model builders: FromScratch and friends, transfer backbones, heads.

Importing this package registers every model and the custom optimizers, so saved models load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from facelab import optim  # noqa: F401  registers AdaBound for loading compiled models
from facelab.models import (
    hassner,  # noqa: F401  registers "hassnercnn"
    scratch,  # noqa: F401  registers "fromscratch"
    siamese,  # noqa: F401  registers "siamese", "embedding"
    transfer,  # noqa: F401  registers "inceptionv3", "resnet50", ...
)
from facelab.models.registry import MODEL_BUILDERS, register_model
from facelab.models.registry import build_model as _build

if TYPE_CHECKING:
    import keras

    from facelab.config import Experiment
    from facelab.tasks import Task

__all__ = ["MODEL_BUILDERS", "build_model", "register_model"]


def build_model(exp: Experiment, task: Task) -> keras.Model:
    """The uncompiled model named by ``exp.model``, sized for ``task``'s classes."""
    return _build(exp, task.num_classes, task.multilabel)
