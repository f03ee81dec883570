"""Atomic file output: write to a temporary file beside the target, then rename over it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd


def _temporary_beside(target: Path) -> Path:
    """An empty temporary file in ``target``'s folder (created if needed); a clear error if not."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent
        )
    except OSError as err:
        raise PermissionError(
            f"{target}: cannot write there ({err.strerror or err}); choose another output folder"
        ) from None
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target`` in one rename."""
    target = Path(target)
    tmp_path = _temporary_beside(target)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; as a plain write would
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def check_writable(target: str | os.PathLike) -> Path:
    """Fail early, before long work, when ``target`` cannot be written (same error as a write)."""
    _temporary_beside(Path(target)).unlink()
    return Path(target)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(text: str, target: str | os.PathLike) -> Path:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def atomic_write_csv(frame: pd.DataFrame, target: str | os.PathLike, **to_csv) -> Path:
    """Write a frame as CSV atomically (no index, ``\\n`` line ends, so output is byte-stable)."""
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n", **to_csv)
    return Path(target)
