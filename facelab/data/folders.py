"""A folder-per-class tree (`<root>/<class>/*.jpg`, the hand-labelled layout) -> labelled frame."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from facelab.data.images import list_images
from facelab.data.skipped import SkipLog
from facelab.tasks import Task


def read_folders(
    root: str | os.PathLike, task: Task | None = None, skip_log: SkipLog | None = None
) -> pd.DataFrame:
    """Frame with ``path, label, group`` for every image under ``<root>/<class>/``.

    With a ``task``, class folders must be among its classes (other folders are skipped with a
    reason). The group is empty: a folder tree carries no identity.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: no such folder; pass the folder that holds one folder per class"
        )
    skip_log = skip_log if skip_log is not None else SkipLog()
    rows = []
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for class_dir in class_dirs:
        if task is not None and class_dir.name not in task.classes:
            skip_log.add(
                class_dir, f"folder is not a class of task {task.name} {list(task.classes)}"
            )
            continue
        rows += [(path, class_dir.name, "") for path in list_images(class_dir)]
    if not rows:
        expected = f" ({', '.join(task.classes)})" if task else ""
        raise ValueError(
            f"{root}: found no images in class folders{expected}; expected <root>/<class>/<image>"
        )
    return pd.DataFrame(rows, columns=["path", "label", "group"])
