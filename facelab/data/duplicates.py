"""Near-duplicate images (one photo saved twice, resized, recompressed or lightly edited), found by
perceptual hash so that a split keeps each set of them in one split.

Folders gathered from the web often hold the same photo under several names; one copy in train and
one in test makes the test score a memory test.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from facelab.data.images import ImageReadError, read_image, resize_image
from facelab.data.manifest import DUPLICATE_COLUMN
from facelab.data.skipped import SkipLog
from facelab.data.split import connected_sets

# Hamming distance between 64-bit pHashes. On the 1,400 real mask faces: copies and re-saves are
# at 0, consecutive video frames at 2-4, and at 6 two different people already appear.
DEFAULT_MAX_DISTANCE = 4
# The hash sees only the pattern of light, so two plain images that differ only in colour look the
# same to it; near-duplicates must also agree in colour: mean absolute difference of their 4x4
# colour thumbnails in grey levels (copies on the mask faces: at most 5; other pairs found by the
# hash at distance 6: up to 35).
MAX_COLOUR_DIFFERENCE = 12.0
_BLOCK_ELEMENTS = 2**24  # hash pairs compared at once (128 MB of XORs), whatever the image count


def fingerprints(
    paths: Sequence[str | os.PathLike], skip_log: SkipLog | None = None, progress: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image its 64-bit pHash (imagehash's DCT hash), its 4x4 colour thumbnail (48 values) and
    whether it was readable; unreadable files go to ``skip_log``."""
    import imagehash
    from PIL import Image

    hashes = np.zeros(len(paths), np.uint64)
    thumbnails = np.zeros((len(paths), 48), np.float32)
    readable = np.zeros(len(paths), bool)
    for i, path in enumerate(tqdm(paths, desc="hash", unit="img", disable=not progress)):
        try:
            image = read_image(path)
        except ImageReadError as err:
            if skip_log is not None:
                skip_log.add(err.path, err.reason)
            continue
        bits = imagehash.phash(Image.fromarray(image)).hash.ravel()
        hashes[i] = np.packbits(bits).view(">u8")[0]
        thumbnails[i] = resize_image(image, 4).ravel()
        readable[i] = True
    return hashes, thumbnails, readable


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int = DEFAULT_MAX_DISTANCE) -> np.ndarray:
    """(K, 2) row pairs ``i < j`` whose hashes differ in at most ``max_distance`` bits."""
    hashes = np.asarray(hashes, np.uint64)
    rows = max(1, _BLOCK_ELEMENTS // max(1, len(hashes)))
    pairs = []
    for start in range(0, len(hashes), rows):
        # each block against itself and every later row: each pair once
        distance = np.bitwise_count(hashes[start : start + rows, None] ^ hashes[None, start:])
        i, j = np.nonzero(distance <= max_distance)
        keep = i < j  # j counts from start too; i == j is a row with itself
        pairs.append(np.stack([start + i[keep], start + j[keep]], axis=1))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)


def find_duplicates(
    paths: Sequence[str | os.PathLike],
    max_distance: int = DEFAULT_MAX_DISTANCE,
    skip_log: SkipLog | None = None,
    progress: bool = True,
) -> pd.Series:
    """Per path, the name of its set of near-duplicates (``dup0``, ``dup1``, ...) or "" for an image
    like no other: pHashes at most ``max_distance`` bits apart and colours alike. An unreadable file
    is in no set (and in ``skip_log``)."""
    hashes, thumbnails, readable = fingerprints(paths, skip_log, progress)
    rows = np.flatnonzero(readable)
    pairs = rows[near_duplicate_pairs(hashes[rows], max_distance)]
    colour = np.abs(thumbnails[pairs[:, 0]] - thumbnails[pairs[:, 1]]).mean(axis=1)
    pairs = pairs[colour <= MAX_COLOUR_DIFFERENCE]
    sets = pd.Series(connected_sets(len(paths), pairs, "dup"), name=DUPLICATE_COLUMN)
    sizes = sets[sets != ""].value_counts()
    if len(sizes) and sizes.iloc[0] > max(10, 0.05 * len(paths)):
        warnings.warn(
            f"near-duplicate set {sizes.index[0]} holds {sizes.iloc[0]} of {len(paths)} images: they "
            "are too alike for the hash (plain or rendered images?), and a split keeps them together; "
            "pass a smaller max_distance (--duplicate-distance) or do not look for duplicates",
            UserWarning,
            stacklevel=2,
        )
    return sets


def duplicate_report(frame: pd.DataFrame) -> str:
    """One line: how many sets of near-duplicates, how many images they hold and how many sets
    have images in more than one split (``split`` column, where there is one)."""
    sets = frame[frame[DUPLICATE_COLUMN].fillna("") != ""]
    n_sets = sets[DUPLICATE_COLUMN].nunique()
    line = f"near-duplicates: {n_sets} set{'s' * (n_sets != 1)} holding {len(sets)} images"
    if "split" in frame and n_sets:
        across = int((sets.groupby(DUPLICATE_COLUMN)["split"].nunique() > 1).sum())
        line += f"; {across} span more than one split"
    return line
