"""Task registry: the classes of each task and which classes a horizontal flip swaps."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from facelab.data.celeba_names import ATTRIBUTES


@dataclass(frozen=True)
class Task:
    """One classification task: its class names and how a horizontal flip changes a label."""

    name: str
    classes: tuple[str, ...]
    multilabel: bool = False
    flip_swap: tuple[tuple[str, str], ...] = ()  # pairs of classes a horizontal flip exchanges

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def flip_permutation(self) -> list[int]:
        """Index ``i`` of the result is the class that class ``i`` becomes after a horizontal flip."""
        index = {name: i for i, name in enumerate(self.classes)}
        perm = list(range(len(self.classes)))
        for a, b in self.flip_swap:
            perm[index[a]], perm[index[b]] = index[b], index[a]
        return perm

    def flipped_label(self, label: str) -> str:
        """The label of the horizontally flipped image (``left`` <-> ``right`` where it applies)."""
        return self.classes[self.flip_permutation()[self.class_index(label)]]

    def class_index(self, label: str) -> int:
        """Position of ``label`` in ``classes``; a clear error for a label the task does not know."""
        try:
            return self.classes.index(label)
        except ValueError:
            raise ValueError(
                f"label {label!r} is not a class of task {self.name!r}; "
                f"expected one of {list(self.classes)}"
            ) from None


_LEFT_RIGHT = (("left", "right"),)

TASKS: dict[str, Task] = {
    "orientation": Task("orientation", ("left", "center", "right"), flip_swap=_LEFT_RIGHT),
    "light": Task("light", ("left", "center", "right"), flip_swap=_LEFT_RIGHT),
    "gender": Task("gender", ("female", "male")),
    "attributes": Task("attributes", ATTRIBUTES, multilabel=True),
    "mask": Task("mask", ("with_mask", "without_mask")),
    "mask_count": Task("mask_count", ("none", "all", "some")),
    "verification": Task("verification", ("different", "same")),
}


def get_task(name: str, classes: Sequence[str] | None = None) -> Task:
    """Look a task up by name; the error lists the tasks there are. ``classes`` narrows a
    multi-label task (attributes) to a subset of its labels, in the order given."""
    try:
        task = TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}") from None
    if not classes or tuple(classes) == task.classes:
        return task
    if not task.multilabel:
        raise ValueError(
            f"task {name!r} has fixed classes {list(task.classes)}; only a multi-label task "
            "(attributes) can be narrowed to a subset"
        )
    unknown = [c for c in classes if c not in task.classes]
    if unknown:
        raise ValueError(
            f"{unknown} are not labels of task {name!r}; choose among {list(task.classes)}"
        )
    if len(set(classes)) != len(classes):
        raise ValueError(f"attributes {list(classes)} name one label twice")
    return dataclasses.replace(task, classes=tuple(classes))
