"""Experiment: one dataclass holding every knob of a run; saved into each run card."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from facelab.tasks import Task, get_task

OPTIMIZERS = ("adabound", "amsbound", "adam", "sgd", "nadam")
CLASS_WEIGHTS = ("none", "balanced")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class Experiment:
    """Every hyperparameter of one run (task, model, run name) with the reference defaults."""

    task: str = "orientation"
    model: str = "fromscratch"
    run: str = ""  # the user's name for this try; part of every output's name
    manifest: str = ""  # CSV with path,label,split[,group,score]
    pairs: str = ""  # verification: folder with pairsDevTrain.txt, pairsDevTest.txt and lfw/
    output_dir: str = "."  # models/, plots/ and predictions/ are created under it

    attributes: list[str] = field(default_factory=list)  # attributes task: subset (empty: all 40)
    class_weight: str = "none"  # none | balanced: weigh rare classes (attributes: rare values) up

    image_size: int = 128  # square input side in pixels
    batch_size: int = 16
    epochs: int = 15
    seed: int = 42

    optimizer: str = "adabound"  # adabound | amsbound | adam | sgd | nadam
    lr: float = 0.005
    final_lr: float = 0.1  # AdaBound: the SGD rate the bounds converge to
    gamma: float = 1e-3  # AdaBound: convergence speed of the bounds
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD

    conv_dropout: float = 0.25  # FromScratch: after each pooling
    dense_dropout: float = 0.7  # FromScratch: after the dense layer; heads: first dropout
    head_dropout: float = 0.5  # transfer heads: dropout after each hidden dense layer
    dense_units: int = 128

    weights: str | None = None  # None, "imagenet" or a local weights file (transfer models)
    from_run: str = ""  # start from an earlier run's model: its run name (same task and model)
    # or a .keras path; e.g. CelebA gender pretraining, then fine-tuning here on Adience
    fine_tune_layers: int = 0  # transfer phase 2: top layers unfrozen (-1: all, 0: no phase 2)
    fine_tune_epochs: int = 0
    fine_tune_lr: float = 1e-5

    augment: bool = False
    rotation: float = 10.0  # degrees, uniform in [-r, r]
    shift: float = 0.1  # fraction of the side, uniform in [-s, s]
    zoom: float = 0.1  # scale uniform in [1 - z, 1 + z]
    brightness: float = 0.2  # factor uniform in [1 - b, 1 + b]
    flip: bool = True  # horizontal flip with p=0.5; left/right labels swap where the task says

    early_stopping: int = 0  # patience in epochs; 0 = off
    reduce_lr: int = 0  # ReduceLROnPlateau patience in epochs; 0 = off
    cache: str = "memory"  # "memory", "none" or a folder for an on-disk cache
    jit_compile: bool = False  # XLA-compile the train step
    mixed_precision: bool = False  # 16-bit compute, float32 outputs (devices.mixed_policy)
    devices: int = 1  # replicas for tf.distribute.MirroredStrategy; batch_size is per replica
    deterministic: bool = False  # deterministic TF ops: same seed, same weights (slower)
    extra: dict[str, Any] = field(default_factory=dict)  # task- or model-specific knobs

    def __post_init__(self) -> None:
        self.attributes = list(self.attributes or [])
        self.task_spec()  # unknown task or attribute names fail here, before any work
        if self.class_weight not in CLASS_WEIGHTS:
            raise ValueError(
                f"class_weight {self.class_weight!r} unknown; choose one of {CLASS_WEIGHTS}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} unknown; choose one of {OPTIMIZERS}")
        if self.run and not _RUN_NAME.match(self.run):
            raise ValueError(
                f"run name {self.run!r} must start with a letter or digit and hold only "
                "letters, digits, '.', '_' and '-' (it becomes part of file names)"
            )
        for name in ("image_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.weights in ("none", "None", ""):
            self.weights = None

    def task_spec(self) -> Task:
        """The run's task, narrowed to ``attributes`` when a subset is given."""
        return get_task(self.task, self.attributes or None)

    @property
    def stem(self) -> str:
        """The name shared by every output of this run: ``<task>_<model>[_<run>]``."""
        return f"{self.task}_{self.model}" + (f"_{self.run}" if self.run else "")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field, for the run card."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Experiment:
        """Build from a dict (a run card's ``experiment``); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown Experiment fields {unknown}; known: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes: Any) -> Experiment:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
