"""Lay a split manifest out as `<out>/{train,val,test}/<class>/` with symlinks or copies."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pandas as pd

MARKER = ".facelab-materialized"


def materialize(frame: pd.DataFrame, out_dir: str | os.PathLike, mode: str = "symlink") -> Path:
    """Create ``out_dir/<split>/<label>/<file>`` for every row; never touches the source files.

    ``out_dir`` must be new, empty, or an earlier output of this function (it is then rebuilt).
    Two sources with the same file name get a short hash of their path added to the name.
    """
    if mode not in ("symlink", "copy"):
        raise ValueError(f"mode {mode!r} unknown; choose symlink or copy")
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out}: exists and is not a folder; choose another --materialize")
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise FileExistsError(
                f"{out}: folder is not empty and was not made by split_dataset.py; "
                "choose a new folder (nothing there is changed)"
            )
        for split_dir in out.iterdir():  # only our own earlier output: links/copies we made
            if split_dir.is_dir() and not split_dir.is_symlink():
                shutil.rmtree(split_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by split_dataset.py --materialize; safe to delete\n")
    taken: set[Path] = set()
    for source, label, split in frame[["path", "label", "split"]].itertuples(index=False):
        source = Path(source).resolve()
        target = out / split / label / source.name
        if target in taken:
            digest = hashlib.sha1(str(source).encode()).hexdigest()[:8]
            target = target.with_name(f"{source.stem}_{digest}{source.suffix}")
        taken.add(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        if mode == "symlink":
            target.symlink_to(source)
        else:
            shutil.copy2(source, target)
    return out
