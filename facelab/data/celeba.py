"""CelebA annotation files -> pandas frames, checked line by line.

The real files: `list_attr_celeba.txt` and `list_landmarks_align_celeba.txt` start with a count
line and a header line, then rows of a file name and numbers separated by runs of spaces;
`identity_CelebA.txt` and `list_eval_partition.txt` have neither count nor header.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from PIL import Image

from facelab.data.celeba_names import ALIGNED_SIZE, ATTRIBUTES, LANDMARK_COLUMNS
from facelab.data.skipped import SkipLog

ATTRIBUTE_FILE = "list_attr_celeba.txt"
LANDMARK_FILE = "list_landmarks_align_celeba.txt"
IDENTITY_FILE = "identity_CelebA.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_FOLDER = "img_align_celeba"
_MAX_BAD_SHARE = 0.5  # more malformed rows than this and the file is not what it claims to be


class AnnotationError(ValueError):
    """An annotation file that cannot be parsed at all; the message names the file and line."""


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file not found; check the dataset folder")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise AnnotationError(
            f"{path}: not a text annotation file (byte {err.start} is not UTF-8); "
            "pass the CelebA .txt file"
        ) from None


def read_table(
    path: str | os.PathLike,
    columns: tuple[str, ...],
    *,
    header: bool,
    integer: bool = True,
    skip_log: SkipLog | None = None,
) -> pd.DataFrame:
    """Read one CelebA-format table (``name v1 v2 ...``) indexed by image file name.

    With ``header`` the file must start with the count line and the column-name line.
    Malformed and duplicate rows are skipped into ``skip_log``; an unparseable file raises.
    """
    path = Path(path)
    lines = _read_lines(path)
    skip_log = skip_log if skip_log is not None else SkipLog()
    first_row = 0
    if header:
        if len(lines) < 2 or not lines[0].strip().isdigit():
            raise AnnotationError(
                f"{path}, line 1: expected the row count (a number), found {lines[:1]!r}; "
                "is this a CelebA annotation file?"
            )
        names = lines[1].split()
        if tuple(names) != columns:
            raise AnnotationError(
                f"{path}, line 2: expected the header {' '.join(columns[:3])} ... "
                f"({len(columns)} names), found {' '.join(names[:3])} ... ({len(names)} names)"
            )
        first_row = 2
    rows: dict[str, list] = {}
    bad = 0
    for number, line in enumerate(lines[first_row:], start=first_row + 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path.name}, line {number}"
        if len(fields) != len(columns) + 1:
            bad += 1
            skip_log.add(where, f"expected {len(columns) + 1} fields, found {len(fields)}")
            continue
        try:
            values = [int(v) if integer else v for v in fields[1:]]
        except ValueError:
            bad += 1
            skip_log.add(where, "non-numeric value")
            continue
        if fields[0] in rows:
            skip_log.add(where, f"duplicate row for {fields[0]} (first one kept)")
            continue
        rows[fields[0]] = values
    total = len(rows) + bad
    if total and bad / total > _MAX_BAD_SHARE:
        raise AnnotationError(
            f"{path}: {bad} of {total} rows are malformed (first at {skip_log.rows[0][0]}); "
            "this does not look like a CelebA annotation file"
        )
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(columns))
    frame.index.name = "image_id"
    return frame


def read_attributes(path: str | os.PathLike, skip_log: SkipLog | None = None) -> pd.DataFrame:
    """`list_attr_celeba.txt` -> frame of 40 columns of 1 / -1, indexed by image file name."""
    skip_log = skip_log if skip_log is not None else SkipLog()
    frame = read_table(path, ATTRIBUTES, header=True, skip_log=skip_log)
    bad = ~frame.isin([1, -1]).all(axis=1)
    for image_id in frame.index[bad]:
        skip_log.add(f"{Path(path).name}: {image_id}", "attribute values not 1/-1")
    return frame[~bad]


def read_landmarks(path: str | os.PathLike, skip_log: SkipLog | None = None) -> pd.DataFrame:
    """`list_landmarks_align_celeba.txt` -> frame of the ten coordinates (178x218 frame)."""
    return read_table(path, LANDMARK_COLUMNS, header=True, skip_log=skip_log)


def read_identities(path: str | os.PathLike, skip_log: SkipLog | None = None) -> pd.Series:
    """`identity_CelebA.txt` -> identity number per image file name."""
    return read_table(path, ("identity",), header=False, skip_log=skip_log)["identity"]


def read_partition(path: str | os.PathLike, skip_log: SkipLog | None = None) -> pd.Series:
    """`list_eval_partition.txt` -> 0 (train), 1 (val) or 2 (test) per image file name."""
    return read_table(path, ("partition",), header=False, skip_log=skip_log)["partition"]


def image_sizes(paths: list[Path], skip_log: SkipLog | None = None) -> pd.DataFrame:
    """Width and height of each image from its header (no full decode); unreadable ones are skipped."""
    skip_log = skip_log if skip_log is not None else SkipLog()
    sizes = {}
    for path in paths:
        try:
            with Image.open(path) as image:
                sizes[path.name] = image.size
        except (OSError, ValueError) as err:
            skip_log.add(path, f"not a readable image ({type(err).__name__})")
    frame = pd.DataFrame.from_dict(sizes, orient="index", columns=["width", "height"])
    frame.index.name = "image_id"
    return frame


def load_celeba(
    root: str | os.PathLike,
    skip_log: SkipLog | None = None,
    *,
    attributes: bool = True,
    landmarks: bool = True,
) -> pd.DataFrame:
    """Join a CelebA folder's files into one frame indexed by image file name.

    Columns: path, width, height, identity, partition (when the files exist), the 40 attributes
    and the ten landmarks scaled to each image's actual size (NaN where a row has none).
    Rows without an image and images without an attribute row are reported in ``skip_log``.
    """
    root = Path(root).resolve()
    skip_log = skip_log if skip_log is not None else SkipLog()
    folder = root / IMAGE_FOLDER
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: no image folder; a CelebA root holds {IMAGE_FOLDER}/ and the annotation "
            "files (see README, 'Getting CelebA')"
        )
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    frame = image_sizes(files, skip_log)
    frame.insert(0, "path", [str(folder / name) for name in frame.index])
    known = set(frame.index)

    def join(table: pd.DataFrame | pd.Series, name: str, required: bool) -> None:
        nonlocal frame
        missing = [image_id for image_id in table.index if image_id not in known]
        for image_id in missing[:1000]:
            skip_log.add(f"{name}: {image_id}", "listed but the image is missing or unreadable")
        if required:
            for image_id in frame.index.difference(table.index):
                skip_log.add(frame.at[image_id, "path"], f"image has no row in {name}")
            frame = frame.loc[frame.index.intersection(table.index, sort=False)]
        frame = frame.join(table, how="left")

    if (root / IDENTITY_FILE).exists():
        join(read_identities(root / IDENTITY_FILE, skip_log), IDENTITY_FILE, required=False)
    if (root / PARTITION_FILE).exists():
        join(read_partition(root / PARTITION_FILE, skip_log), PARTITION_FILE, required=False)
    if attributes:
        join(read_attributes(root / ATTRIBUTE_FILE, skip_log), ATTRIBUTE_FILE, required=True)
    if landmarks and (root / LANDMARK_FILE).exists():
        marks = read_landmarks(root / LANDMARK_FILE, skip_log)
        join(marks, LANDMARK_FILE, required=False)
        frame[list(LANDMARK_COLUMNS)] = scale_landmarks(frame)
    return frame


def scale_landmarks(frame: pd.DataFrame) -> pd.DataFrame:
    """Landmarks given in the 178x218 aligned frame, scaled to each row's width and height."""
    marks = frame[list(LANDMARK_COLUMNS)].astype("float64")
    sx = frame["width"] / ALIGNED_SIZE[0]
    sy = frame["height"] / ALIGNED_SIZE[1]
    for column in LANDMARK_COLUMNS:
        marks[column] = marks[column] * (sx if column.endswith("_x") else sy)
    return marks
