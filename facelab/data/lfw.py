"""Labeled Faces in the Wild: the official pairs files and the `lfw/<Name>/<Name>_<NNNN>.jpg` layout.

A pairs file (``pairsDevTrain.txt``, ``pairsDevTest.txt`` or the 10-fold ``pairs.txt``) starts with
a count line (``N``, or ``folds N`` for ``pairs.txt``), then per fold N matched lines
``name<TAB>i<TAB>j`` and N mismatched lines ``name1<TAB>i<TAB>name2<TAB>j``. The reader turns it into
a pairs frame, one row per pair, with the image paths checked. No TensorFlow here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

#: The official development pairs files, by the split they serve.
DEV_PAIRS_FILES = {"train": "pairsDevTrain.txt", "test": "pairsDevTest.txt"}

#: Columns of a pairs frame, in order.
PAIR_COLUMNS = ("person_a", "image_a", "person_b", "image_b", "same", "line", "path_a", "path_b")

_MAX_LISTED = 5  # missing images named in one error message


def lfw_image_path(images_root: str | os.PathLike, person: str, number: int) -> Path:
    """The file of image ``number`` (1-based) of ``person``: ``<root>/<Name>/<Name>_<NNNN>.jpg``."""
    return Path(images_root) / person / f"{person}_{int(number):04d}.jpg"


def images_root(folder: str | os.PathLike) -> Path:
    """The folder holding one sub-folder per person: ``<folder>/lfw`` when there is one, else ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: no such folder; pass the LFW folder that holds lfw/ and the pairs files"
        )
    return folder / "lfw" if (folder / "lfw").is_dir() else folder


def read_pairs_file(path: str | os.PathLike) -> pd.DataFrame:
    """Parse an official LFW pairs file into ``person_a, image_a, person_b, image_b, same, line``.

    ``same`` is 1 for a matched pair and 0 for a mismatched one; ``line`` is the 1-based line number
    (errors and plots cite it). A ``fold`` column is added for the 10-fold ``pairs.txt``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: pairs file not found; pass a folder with pairsDevTrain.txt and "
            "pairsDevTest.txt (or the file itself)"
        )
    lines = path.read_text(encoding="utf-8").splitlines()
    folds, per_fold = _count_line(path, lines[0] if lines else "")
    rows = []
    for number, text in enumerate(lines[1:], start=2):
        if not text.strip():
            continue
        fields = text.strip().split()
        if len(fields) == 3:
            name, i, j = fields
            rows.append(
                (
                    name,
                    _image_number(path, number, i),
                    name,
                    _image_number(path, number, j),
                    1,
                    number,
                )
            )
        elif len(fields) == 4:
            a, i, b, j = fields
            rows.append(
                (a, _image_number(path, number, i), b, _image_number(path, number, j), 0, number)
            )
        else:
            raise ValueError(
                f"{path}, line {number}: expected 'name i j' (matched) or 'name1 i name2 j' "
                f"(mismatched), got {len(fields)} fields: {text.strip()!r}"
            )
    expected = folds * 2 * per_fold
    if len(rows) != expected:
        raise ValueError(
            f"{path}: the count line promises {expected} pairs ({folds} x 2 x {per_fold}) but the "
            f"file holds {len(rows)}; the file is truncated or edited — fetch it again"
        )
    frame = pd.DataFrame(rows, columns=list(PAIR_COLUMNS[:6]))
    if folds > 1:
        frame.insert(0, "fold", [k // (2 * per_fold) for k in range(len(frame))])
    block = frame["same"].to_numpy().reshape(folds, 2, per_fold)
    if not ((block[:, 0] == 1).all() and (block[:, 1] == 0).all()):
        raise ValueError(
            f"{path}: each block of {2 * per_fold} pairs must list {per_fold} matched pairs "
            f"(3 fields) then {per_fold} mismatched pairs (4 fields); the order is off"
        )
    return frame


def read_lfw_pairs(
    folder: str | os.PathLike, split: str = "train", pairs_file: str | os.PathLike | None = None
) -> pd.DataFrame:
    """The pairs of ``split`` ("train" or "test": pairsDevTrain/Test.txt in ``folder``) with paths.

    ``pairs_file`` overrides the file. Adds ``path_a``/``path_b``; raises FileNotFoundError naming
    the pairs file, its line and the image when an image of a pair is missing.
    """
    if pairs_file is None:
        if split not in DEV_PAIRS_FILES:
            raise ValueError(f"split {split!r} unknown; choose one of {sorted(DEV_PAIRS_FILES)}")
        pairs_file = Path(folder) / DEV_PAIRS_FILES[split]
    frame = read_pairs_file(pairs_file)
    root = images_root(folder)
    frame["path_a"] = [
        str(lfw_image_path(root, p, i))
        for p, i in zip(frame["person_a"], frame["image_a"], strict=True)
    ]
    frame["path_b"] = [
        str(lfw_image_path(root, p, i))
        for p, i in zip(frame["person_b"], frame["image_b"], strict=True)
    ]
    check_images(frame, pairs_file)
    return frame


def check_images(pairs: pd.DataFrame, source: str | os.PathLike = "pairs") -> None:
    """Raise FileNotFoundError naming each missing image (up to five) with its pairs-file line."""
    missing = []
    exists: dict[str, bool] = {}
    for row in pairs.itertuples(index=False):
        for path in (row.path_a, row.path_b):
            if path not in exists:
                exists[path] = os.path.isfile(path)
            if not exists[path]:
                missing.append((row.line, path))
    if missing:
        listed = "; ".join(f"line {line}: {path}" for line, path in missing[:_MAX_LISTED])
        more = f" (and {len(missing) - _MAX_LISTED} more)" if len(missing) > _MAX_LISTED else ""
        raise FileNotFoundError(
            f"{source}: {len(missing)} image(s) of its pairs are missing — {listed}{more}; "
            "put the LFW images under lfw/<Name>/<Name>_<NNNN>.jpg beside the pairs file, "
            "or remove those lines"
        )


def pair_images(pairs: pd.DataFrame) -> pd.DataFrame:
    """The distinct images of a pairs frame: ``path, person``, sorted by path."""
    images = pd.concat(
        [
            pairs[["path_a", "person_a"]].set_axis(["path", "person"], axis=1),
            pairs[["path_b", "person_b"]].set_axis(["path", "person"], axis=1),
        ]
    )
    return images.drop_duplicates("path").sort_values("path", ignore_index=True)


def pair_people(pairs: pd.DataFrame) -> set[str]:
    """Every person named in a pairs frame."""
    return set(pairs["person_a"]) | set(pairs["person_b"])


def _count_line(path: Path, text: str) -> tuple[int, int]:
    fields = text.split()
    try:
        numbers = [int(f) for f in fields]
    except ValueError:
        numbers = []
    if len(numbers) == 1 and numbers[0] > 0:
        return 1, numbers[0]
    if len(numbers) == 2 and min(numbers) > 0:
        return numbers[0], numbers[1]
    raise ValueError(
        f"{path}, line 1: expected the count line 'N' (pairsDevTrain/Test.txt) or 'folds N' "
        f"(pairs.txt), got {text!r}; is this an LFW pairs file?"
    )


def _image_number(path: Path, line: int, text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(
            f"{path}, line {line}: image number {text!r} must be a positive integer (1 is the "
            "file <Name>_0001.jpg)"
        )
    return number
