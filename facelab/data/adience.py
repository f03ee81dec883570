"""Adience benchmark fold files -> a frame of gender labels with the official five folds.

The real files `fold_frontal_{0..4}_data.txt` are tab separated, start with the header row
``user_id original_image face_id age gender x y dx dy tilt_ang fiducial_yaw_angle fiducial_score``
and list one face per line; its image is
``faces/<user_id>/landmark_aligned_face.<face_id>.<original_image>``. Gender is ``f``, ``m``,
``u`` (unknown) or empty; only ``f`` and ``m`` are kept.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from facelab.data.celeba import AnnotationError
from facelab.data.skipped import SkipLog

FOLD_FILE = "fold_frontal_{}_data.txt"
FOLDS = 5
HEADER = (
    "user_id", "original_image", "face_id", "age", "gender", "x", "y", "dx", "dy", "tilt_ang",
    "fiducial_yaw_angle", "fiducial_score",
)  # fmt: skip
FACE_DIRS = ("faces", "aligned")  # the layout of REFERENCE.md; the name of the real download
GENDERS = {"f": "female", "m": "male"}
COLUMNS = ("path", "label", "group", "fold", "age", "face_id", "tilt_ang", "fiducial_yaw_angle")
_MAX_BAD_SHARE = 0.5  # more malformed lines than this and the file is not an Adience fold file
_FOLD_NUMBER = re.compile(r"fold_frontal_(\d+)_data\.txt$")


def fold_files(root: str | os.PathLike, folds: Iterable[int] = range(FOLDS)) -> list[Path]:
    """The fold files under ``root`` (one per fold); a clear error names any that is missing."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: no such folder; pass the Adience root that holds faces/ and "
            f"{FOLD_FILE.format(0)} ... {FOLD_FILE.format(FOLDS - 1)}"
        )
    files = [root / FOLD_FILE.format(k) for k in folds]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        hint = (
            " (found fold_K_data.txt: use the fold_frontal_K_data.txt files of the frontal subset)"
            if (root / "fold_0_data.txt").is_file()
            else ""
        )
        raise FileNotFoundError(
            f"{root}: fold file(s) {', '.join(missing)} not found{hint}; put the five Adience "
            f"files {FOLD_FILE.format(0)} ... {FOLD_FILE.format(FOLDS - 1)} in that folder"
        )
    return files


def face_folder(root: str | os.PathLike) -> Path:
    """The folder of per-user face folders: ``faces/`` (or ``aligned/``, as the download names it)."""
    for name in FACE_DIRS:
        if (Path(root) / name).is_dir():
            return (Path(root) / name).resolve()
    raise FileNotFoundError(
        f"{root}: no faces/ folder; an Adience root holds faces/<user_id>/"
        "landmark_aligned_face.<face_id>.<original_image> and the fold_frontal_K_data.txt files"
    )


def read_fold_file(
    path: str | os.PathLike, faces: str | os.PathLike, skip_log: SkipLog | None = None
) -> pd.DataFrame:
    """One fold file -> its rows (all genders) with the image path; bad lines go to ``skip_log``.

    The fold number comes from the file name. A file without the Adience header raises.
    """
    path = Path(path)
    skip_log = skip_log if skip_log is not None else SkipLog()
    match = _FOLD_NUMBER.search(path.name)
    if match is None:
        raise ValueError(f"{path}: not named fold_frontal_K_data.txt; cannot tell its fold")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise AnnotationError(
            f"{path}: not a text file (byte {err.start} is not UTF-8); pass the Adience fold file"
        ) from None
    found = tuple(f.strip() for f in lines[0].split("\t")) if lines else ()
    if found != HEADER:
        raise AnnotationError(
            f"{path}, line 1: expected the tab-separated Adience header {' '.join(HEADER[:5])} ... "
            f"({len(HEADER)} names), found {lines[0][:60] if lines else 'an empty file'!r}; "
            "is this an Adience fold file?"
        )
    faces = Path(faces)
    rows, bad = [], 0
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("\t")]
        where = f"{path.name}, line {number}"
        if len(fields) != len(HEADER):
            bad += 1
            skip_log.add(where, f"expected {len(HEADER)} tab-separated fields, found {len(fields)}")
            continue
        row = dict(zip(HEADER, fields, strict=True))
        if not row["user_id"] or not row["original_image"] or not row["face_id"].isdigit():
            bad += 1
            skip_log.add(where, "empty user_id or original_image, or face_id not a whole number")
            continue
        name = f"landmark_aligned_face.{row['face_id']}.{row['original_image']}"
        row["path"] = str(faces / row["user_id"] / name)
        row["line"] = where
        rows.append(row)
    if bad and bad / (len(rows) + bad) > _MAX_BAD_SHARE:
        raise AnnotationError(
            f"{path}: {bad} of {len(rows) + bad} lines are malformed; "
            "this does not look like an Adience fold file (tab-separated, 12 fields a line)"
        )
    frame = pd.DataFrame(rows, columns=[*HEADER, "path", "line"])
    frame["fold"] = int(match[1])
    return frame


def read_adience(
    root: str | os.PathLike, skip_log: SkipLog | None = None, folds: Iterable[int] = range(FOLDS)
) -> pd.DataFrame:
    """All fold files under ``root`` -> one row per face with a known gender, in file order.

    Columns: path (absolute), label (female/male), group (= user_id), fold, age, face_id,
    tilt_ang, fiducial_yaw_angle. Rows of gender ``u`` or empty are dropped and counted in
    ``frame.attrs["dropped"]`` ({"u": ..., "empty": ...}); missing images go to ``skip_log``.
    """
    skip_log = skip_log if skip_log is not None else SkipLog()
    files = fold_files(root, folds)
    faces = face_folder(root)
    frame = pd.concat([read_fold_file(f, faces, skip_log) for f in files], ignore_index=True)
    gender = frame["gender"].str.lower()
    known = gender.isin(list(GENDERS))
    dropped = gender[~known].replace("", "empty").value_counts()
    frame = frame[known]
    duplicate = frame["path"].duplicated()
    for where, image in frame.loc[duplicate, ["line", "path"]].to_numpy():
        skip_log.add(where, f"duplicate row for {image} (first one kept)")
    frame = frame[~duplicate]
    exists = np.array([os.path.isfile(p) for p in frame["path"]], dtype=bool)
    for where, image in frame.loc[~exists, ["line", "path"]].to_numpy():
        skip_log.add(image, f"listed in {where} but the image is missing")
    frame = frame[exists]
    out = pd.DataFrame(
        {
            "path": frame["path"],
            "label": gender[frame.index].map(GENDERS),
            "group": frame["user_id"],
            "fold": frame["fold"].astype(int),
            "age": frame["age"],
            "face_id": frame["face_id"].astype(int),
            "tilt_ang": pd.to_numeric(frame["tilt_ang"], errors="coerce"),
            "fiducial_yaw_angle": pd.to_numeric(frame["fiducial_yaw_angle"], errors="coerce"),
        },
        columns=list(COLUMNS),
    ).reset_index(drop=True)
    out.attrs["dropped"] = {"u": int(dropped.get("u", 0)), "empty": int(dropped.get("empty", 0))}
    out.attrs["dropped"] |= {str(k): int(v) for k, v in dropped.items() if k not in ("u", "empty")}
    return out
