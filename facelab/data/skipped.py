"""Recording inputs that were skipped (a warning each, and one `*_skipped.csv` per output)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd

from facelab.io import atomic_write_csv


class SkippedInputWarning(UserWarning):
    """One input (image, annotation line) was skipped; the run goes on."""


class SkipLog:
    """Collects skipped inputs with the reason, warns for each, and writes them as a CSV."""

    def __init__(self, max_warnings: int = 20):
        self.rows: list[tuple[str, str]] = []
        self.max_warnings = max_warnings

    def add(self, file: str | os.PathLike, reason: str) -> None:
        """Record one skipped input; the first ``max_warnings`` also raise a warning."""
        self.rows.append((str(file), reason))
        if len(self.rows) <= self.max_warnings:
            warnings.warn(f"skipped {file}: {reason}", SkippedInputWarning, stacklevel=2)
        elif len(self.rows) == self.max_warnings + 1:
            warnings.warn("more inputs skipped; see the skipped CSV", SkippedInputWarning, stacklevel=2)

    def extend(self, other: SkipLog) -> None:
        """Take over the rows of another log without warning again."""
        self.rows.extend(other.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def frame(self) -> pd.DataFrame:
        """The skipped inputs as a frame with columns ``file, reason``."""
        return pd.DataFrame(self.rows, columns=["file", "reason"])

    def write_next_to(self, output: str | os.PathLike) -> Path | None:
        """Write ``<output stem>_skipped.csv`` beside ``output`` if anything was skipped."""
        if not self.rows:
            return None
        output = Path(output)
        target = output.with_name(f"{output.stem}_skipped.csv")
        atomic_write_csv(self.frame(), target)
        return target
