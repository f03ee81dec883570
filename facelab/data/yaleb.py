"""Extended Yale B (cropped) file names -> a frame of light directions, the light task's ground truth.

A name such as ``yaleB05_P00A+035E-20.pgm`` says: subject yaleB05, pose 00, light azimuth +35
degrees, elevation -20 degrees. A positive azimuth lights the IMAGE's left half (the subject's
right side), so in image coordinates: ``left`` if azimuth >= 15, ``center`` if |azimuth| <= 10,
``right`` if azimuth <= -15 (the set has no azimuth in between).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from facelab.data.skipped import SkipLog

_NAME = re.compile(
    r"^(?P<subject>yaleB\d{2})_P(?P<pose>\d{2})A(?P<az>[+-]\d{3})E(?P<el>[+-]\d{2})$"
)
_AMBIENT = re.compile(r"_Ambient$", re.IGNORECASE)

# Azimuth limits of the three classes, in degrees (image coordinates, see the module docstring).
LEFT_MIN_AZIMUTH = 15
CENTER_MAX_ABS_AZIMUTH = 10

COLUMNS = ("path", "subject", "group", "azimuth", "elevation", "label")


def azimuth_label(azimuth: int) -> str | None:
    """The light label for an azimuth in degrees (positive lights the image's left), or None between classes."""
    if azimuth >= LEFT_MIN_AZIMUTH:
        return "left"
    if azimuth <= -LEFT_MIN_AZIMUTH:
        return "right"
    if abs(azimuth) <= CENTER_MAX_ABS_AZIMUTH:
        return "center"
    return None


def read_yaleb(root: str | os.PathLike, skip_log: SkipLog | None = None) -> pd.DataFrame:
    """Every lit ``yaleBNN_PxxA±aaaE±ee.pgm`` under ``root`` as a frame sorted by path.

    Columns: path (absolute), subject, group (= subject), azimuth, elevation, label. Ambient images
    are left out (counted in ``frame.attrs["ambient"]``); a .pgm whose name does not parse goes to
    ``skip_log`` (a fresh one, which warns, when None). Other files (DEADJOE, WS_FTP.LOG, *.info)
    are not images and are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: no such folder; pass the Extended Yale B folder that holds yaleBNN/ subfolders"
        )
    skip_log = skip_log if skip_log is not None else SkipLog()
    rows = []
    ambient = 0
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() != ".pgm" or path.name.startswith(".") or not path.is_file():
            continue
        stem = path.stem
        if _AMBIENT.search(stem):
            ambient += 1
            continue
        match = _NAME.match(stem)
        label = None if match is None else azimuth_label(int(match["az"]))
        if label is None:
            reason = (
                "file name is not yaleBNN_PxxA±aaaE±ee.pgm"
                if match is None
                else f"azimuth {int(match['az'])} lies between the light classes"
            )
            skip_log.add(path, reason)
            continue
        rows.append(
            (
                str(path.resolve()),
                match["subject"],
                match["subject"],
                int(match["az"]),
                int(match["el"]),
                label,
            )
        )
    if not rows:
        raise ValueError(
            f"{root}: no Extended Yale B images (yaleBNN_PxxA±aaaE±ee.pgm) found; "
            "pass the folder of the cropped Extended Yale B set"
        )
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame = frame.sort_values("path", ignore_index=True)
    frame.attrs["ambient"] = ambient
    return frame
