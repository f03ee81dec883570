"""The manifest: one CSV (path, label, split, group, score) that every later step reads."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd

from facelab.io import atomic_write_csv
from facelab.tasks import Task

COLUMNS = ("path", "label", "split", "group", "score")
SPLITS = ("train", "val", "test")
# Optional column naming each image's set of near-duplicates (facelab.data.duplicates); "" for none.
DUPLICATE_COLUMN = "duplicate_set"


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file, the row and what to do."""


def manifest_file(path: str | os.PathLike) -> Path:
    """The manifest's path; a clear error when there is no such file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found; make one with `python -m facelab label`")
    return path


def read_manifest(
    path: str | os.PathLike,
    task: Task | None = None,
    *,
    require_split: bool = False,
) -> pd.DataFrame:
    """Read a manifest, resolve each path against the manifest's folder, and check it.

    Checks: the columns exist, labels belong to ``task``, split values are train/val/test.
    Exact duplicate rows are dropped with a warning; a path listed twice with two labels is an error.
    """
    path = manifest_file(path)
    try:
        text_columns = ("path", "label", "split", "group", DUPLICATE_COLUMN)
        frame = pd.read_csv(path, dtype=dict.fromkeys(text_columns, str))
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise ManifestError(f"{path}: not a readable CSV manifest ({err})") from None
    required = ["path", "label"] + (["split"] if require_split else [])
    missing = [c for c in required if c not in frame.columns]
    if missing:
        hint = " (run split_dataset.py on it first)" if "split" in missing else ""
        raise ManifestError(
            f"{path}: missing column(s) {missing}; a manifest has columns {list(COLUMNS)}{hint}"
        )
    if frame.empty:
        raise ManifestError(f"{path}: the manifest has no rows")
    frame["group"] = frame["group"].fillna("") if "group" in frame else ""
    empty = frame["path"].isna() | frame["label"].isna()
    if empty.any():
        row = int(empty.idxmax()) + 2
        raise ManifestError(f"{path}, row {row}: empty path or label; fill it in or delete the row")
    base = path.resolve().parent
    frame["path"] = [p if os.path.isabs(p) else str(base / p) for p in frame["path"]]
    duplicated = frame.duplicated()
    if duplicated.any():
        warnings.warn(
            f"{path}: {int(duplicated.sum())} duplicate row(s) dropped", UserWarning, stacklevel=2
        )
        frame = frame[~duplicated].reset_index(drop=True)
    clash = frame["path"].duplicated(keep=False)
    if clash.any():
        first = frame.loc[clash, "path"].iloc[0]
        raise ManifestError(
            f"{path}: {first} is listed more than once with different labels or splits; "
            "keep one row per image"
        )
    if require_split or "split" in frame:
        bad = ~frame["split"].isin(SPLITS)
        if bad.any():
            row = int(bad.idxmax()) + 2
            raise ManifestError(
                f"{path}, row {row}: split {frame['split'][bad].iloc[0]!r} is not one of {SPLITS}"
            )
    if task is not None:
        check_labels(frame, task, source=str(path))
    return frame


def check_labels(frame: pd.DataFrame, task: Task, source: str = "manifest") -> None:
    """Raise a clear error for the first label that is not a class of ``task``."""
    known = set(task.classes)
    for row, label in enumerate(frame["label"], start=2):
        names = [n for n in str(label).split("|") if n] if task.multilabel else [label]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ManifestError(
                f"{source}, row {row}: label {unknown[0]!r} is not a class of task {task.name!r} "
                f"(classes: {', '.join(task.classes[:8])}{' ...' if len(known) > 8 else ''}); "
                "fix the label or choose the task that matches"
            )


def write_manifest(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a manifest atomically, with paths made relative to its folder where possible."""
    path = Path(path)
    base = path.resolve().parent
    out = frame.copy()
    out["path"] = [_relative(p, base) for p in out["path"]]
    columns = [c for c in COLUMNS if c in out] + [c for c in out if c not in COLUMNS]
    return atomic_write_csv(out[columns], path)


def _relative(path: str, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:  # another drive on Windows
        return str(path)
