"""Group photos composed from single faces, with known counts of masked and unmasked faces.

The mask-counting task (no one / everyone / only some people wear a mask) needs photos of
several people. ``compose_groups`` makes them from a labelled, split set of single faces
(task ``mask``): 2-5 faces per photo, each resized, slightly rotated and placed in its own cell
of a randomly cut grid (so no two faces overlap), on a procedural background (gradient, noise
or blurred shapes). A photo of split S only uses faces of split S, and the same faces, counts
and seed give the same photos.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from facelab.data.images import ImageReadError, read_image, shrink_image
from facelab.data.manifest import SPLITS, write_manifest
from facelab.data.skipped import SkipLog

MASKED, UNMASKED = "with_mask", "without_mask"
COUNT_CLASSES = ("none", "all", "some")  # the classes of task mask_count
DEFAULT_PHOTOS = {"train": 1500, "val": 200, "test": 300}
MANIFEST_NAME = "manifest.csv"
BACKGROUNDS = ("gradient", "noise", "shapes")
# Grids a photo of n faces may be cut into (rows, columns): at most 3 x 3, at most 2 empty cells.
_LAYOUTS = {
    n: [(r, c) for r in (1, 2, 3) for c in (1, 2, 3) if n <= r * c <= n + 2] for n in range(1, 8)
}


def count_class(n_masked: int, n_unmasked: int) -> str:
    """``none`` when no face is masked, ``all`` when every face is, ``some`` otherwise."""
    if n_masked < 0 or n_unmasked < 0 or n_masked + n_unmasked == 0:
        raise ValueError(f"need at least one face, got {n_masked} masked and {n_unmasked} unmasked")
    if n_masked == 0:
        return "none"
    return "all" if n_unmasked == 0 else "some"


def compose_groups(
    faces: pd.DataFrame,
    out_dir: str | os.PathLike,
    n_per_split: Mapping[str, int] | None = None,
    seed: int = 0,
    size: int = 256,
    faces_per_photo: tuple[int, int] = (2, 5),
    max_rotation: float = 10.0,
    face_scale: tuple[float, float] = (0.75, 1.0),
    jitter: float = 0.15,
    quality: int = 92,
    skip_log: SkipLog | None = None,
    train_faces_per_photo: tuple[int, int] | None = None,
) -> pd.DataFrame:
    """Compose ``n_per_split[split]`` photos per split from that split's faces; write JPEGs and
    ``out_dir/manifest.csv``.

    ``faces`` has columns ``path, label (with_mask | without_mask), split``. Returns the manifest
    (absolute paths) with columns ``path, label (none | all | some), split, group, n_faces,
    n_masked, n_unmasked, faces`` (the source faces, ``|``-joined); classes are balanced.
    ``train_faces_per_photo`` (default ``faces_per_photo``) sets the training photos apart: with
    (1, 5) some show a single face, whose label (none or all) teaches its mask directly.
    """
    n_per_split = dict(DEFAULT_PHOTOS if n_per_split is None else n_per_split)
    _check_arguments(faces, n_per_split, size, face_scale, jitter)
    ranges = dict.fromkeys(SPLITS, _check_faces_per_photo(faces_per_photo, "faces_per_photo"))
    if train_faces_per_photo is not None:
        ranges["train"] = _check_faces_per_photo(train_faces_per_photo, "train_faces_per_photo")
    skip_log = skip_log if skip_log is not None else SkipLog()
    out = _prepare_out_dir(Path(out_dir), faces)
    rows = []
    for split, count in n_per_split.items():
        if count == 0:
            continue
        lo, hi = ranges[split]
        pools = _load_pools(faces[faces["split"] == split], split, size, lo, skip_log)
        # One stream of chance per split: changing the train count leaves the test photos as they were.
        rng = np.random.default_rng([seed, SPLITS.index(split)])
        labels = rng.permutation(np.arange(count) % len(COUNT_CLASSES))
        (out / split).mkdir(parents=True, exist_ok=True)
        for i, label_index in enumerate(labels):
            label = COUNT_CLASSES[label_index]
            chosen = _choose_faces(label, pools, lo, hi, rng)
            photo = compose_photo(
                [image for _, image in chosen], size, rng, max_rotation, face_scale, jitter
            )
            path = out / split / f"{split}_{i:05d}.jpg"
            _write_jpeg(path, photo, quality)
            n_masked = sum(1 for (source, masked), _ in chosen if masked)
            rows.append(
                {
                    "path": str(path),
                    "label": count_class(n_masked, len(chosen) - n_masked),
                    "split": split,
                    "group": f"faces-{split}",  # the pool its faces came from: never in two splits
                    "n_faces": len(chosen),
                    "n_masked": n_masked,
                    "n_unmasked": len(chosen) - n_masked,
                    "faces": "|".join(source for (source, _), _ in chosen),
                }
            )
    manifest = pd.DataFrame(rows)
    write_manifest(manifest, out / MANIFEST_NAME)
    (out / "manifest_skipped.csv").unlink(missing_ok=True)  # from an earlier composition
    skip_log.write_next_to(out / MANIFEST_NAME)
    return manifest


def compose_photo(
    faces: list[np.ndarray],
    size: int,
    rng: np.random.Generator,
    max_rotation: float = 10.0,
    face_scale: tuple[float, float] = (0.75, 1.0),
    jitter: float = 0.15,
    background: str | None = None,
) -> np.ndarray:
    """One ``size`` x ``size`` RGB photo: each face mirrored at random, its brightness and contrast
    scaled by up to ``jitter``, resized to ``face_scale`` of its cell, rotated by up to
    ``max_rotation`` degrees and pasted into its own cell of a randomly cut grid."""
    if not 1 <= len(faces) <= max(_LAYOUTS):
        raise ValueError(f"a photo holds 1 to {max(_LAYOUTS)} faces, got {len(faces)}")
    photo = make_background(size, rng, background).astype(np.float32)
    cells = _grid_cells(len(faces), size, rng)
    for face, cell in zip(faces, cells, strict=True):
        _paste(photo, face, cell, rng, max_rotation, face_scale, jitter)
    return np.clip(photo, 0, 255).round().astype(np.uint8)


def make_background(size: int, rng: np.random.Generator, kind: str | None = None) -> np.ndarray:
    """A procedural RGB background: a two-colour gradient, smooth colour noise, or blurred shapes."""
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))] if kind is None else kind
    if kind == "gradient":
        start, end = rng.uniform(0, 255, (2, 3))
        angle = rng.uniform(0, 2 * math.pi)
        y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1)
        t = x * math.cos(angle) + y * math.sin(angle)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        image = start + (end - start) * t[..., None]
    elif kind == "noise":
        coarse = rng.uniform(0, 255, (rng.integers(2, 9), rng.integers(2, 9), 3)).astype(np.float32)
        image = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    elif kind == "shapes":
        image = np.empty((size, size, 3), np.float32)
        image[:] = rng.uniform(0, 255, 3)
        for _ in range(rng.integers(4, 12)):
            colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
            centre = tuple(int(v) for v in rng.integers(0, size, 2))
            axes = tuple(int(v) for v in rng.integers(size // 10, size // 2, 2))
            if rng.random() < 0.5:
                angle = float(rng.uniform(0, 180))
                cv2.ellipse(image, centre, axes, angle, 0, 360, colour, -1)
            else:
                corner = (centre[0] + axes[0], centre[1] + axes[1])
                cv2.rectangle(image, centre, corner, colour, -1)
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=rng.uniform(1.5, 0.06 * size + 1.5))
    else:
        raise ValueError(f"background {kind!r} unknown; choose one of {BACKGROUNDS}")
    image = image + rng.normal(0, rng.uniform(2, 10), (size, size, 3))  # sensor-like grain
    return np.clip(image, 0, 255).astype(np.uint8)


def _check_arguments(faces, n_per_split, size, face_scale, jitter) -> None:
    missing = [c for c in ("path", "label", "split") if c not in faces]
    if missing:
        raise ValueError(
            f"the faces frame lacks column(s) {missing}; label the faces (task mask) and split "
            "them first (python -m facelab label ... then split)"
        )
    unknown = sorted(set(faces["label"]) - {MASKED, UNMASKED})
    if unknown:
        raise ValueError(f"face labels {unknown} are not {MASKED!r} or {UNMASKED!r} (task mask)")
    twice = faces.loc[faces["path"].duplicated(keep=False), "path"]
    if len(twice):
        raise ValueError(
            f"{twice.iloc[0]} is listed more than once; each face needs exactly one split"
        )
    if not sum(n_per_split.values()):
        raise ValueError(f"no photos asked for ({n_per_split}); give a count per split")
    for split, count in n_per_split.items():
        if split not in SPLITS:
            raise ValueError(f"split {split!r} unknown; photo counts are given per split {SPLITS}")
        if int(count) != count or count < 0:
            raise ValueError(f"photo count for {split} must be a whole number >= 0, got {count}")
    if not 0 < face_scale[0] <= face_scale[1] <= 1:
        raise ValueError(f"face_scale {face_scale} must satisfy 0 < low <= high <= 1")
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter {jitter} must be in [0, 1): a share of brightness and contrast")
    if size < 32:
        raise ValueError(f"size {size} is too small for a group photo; use 32 px or more")


def _check_faces_per_photo(faces_per_photo: tuple[int, int], name: str) -> tuple[int, int]:
    lo, hi = (int(v) for v in faces_per_photo)
    if not (1 <= lo <= hi <= max(_LAYOUTS) and hi >= 2):
        raise ValueError(
            f"{name} {tuple(faces_per_photo)} must be (min, max) with 1 <= min <= max <= "
            f"{max(_LAYOUTS)} and max >= 2 (a photo of class 'some' needs two faces)"
        )
    return lo, hi


def _prepare_out_dir(out: Path, faces: pd.DataFrame) -> Path:
    """The output folder: new, empty, or an earlier composer output (its photos are replaced)."""
    out = out.resolve()
    sources = {Path(p).resolve().parent for p in faces["path"]}
    if any(out == s or s in out.parents for s in sources):
        raise ValueError(f"{out}: is inside a folder of source faces; write the photos elsewhere")
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out}: exists and is not a folder; choose another output")
        if any(out.iterdir()) and not (out / MANIFEST_NAME).exists():
            raise FileExistsError(
                f"{out}: folder is not empty and holds no {MANIFEST_NAME}; choose a new folder "
                "(nothing there is changed)"
            )
        for split in SPLITS:
            shutil.rmtree(out / split, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _load_pools(
    faces: pd.DataFrame, split: str, size: int, lo: int, skip_log: SkipLog
) -> dict[bool, list[tuple[tuple[str, bool], np.ndarray]]]:
    """The readable faces of one split, per masked flag, shrunk to at most ``size`` px."""
    pools: dict[bool, list] = {True: [], False: []}
    for path, label in zip(faces["path"], faces["label"], strict=True):
        try:
            image = read_image(path)
        except ImageReadError as err:
            skip_log.add(path, err.reason)
            continue
        image = shrink_image(image, size)
        masked = label == MASKED
        pools[masked].append(((str(path), masked), image))
    for masked, pool in pools.items():
        if len(pool) < lo:
            raise ValueError(
                f"split {split!r} has {len(pool)} readable {MASKED if masked else UNMASKED} "
                f"face(s); its photos need at least {lo} of each class (add faces, re-split them, "
                f"lower the minimum faces per photo, or give {split} no photos)"
            )
    return pools


def _choose_faces(label, pools, lo, hi, rng) -> list:
    """Distinct faces of one split for a photo of class ``label`` (none | all | some)."""
    masked, unmasked = pools[True], pools[False]
    if label == "none":
        n = n_unmasked = rng.integers(lo, min(hi, len(unmasked)) + 1)
    elif label == "all":
        n, n_unmasked = rng.integers(lo, min(hi, len(masked)) + 1), 0
    else:
        n = rng.integers(max(lo, 2), min(hi, len(masked) + len(unmasked)) + 1)
        n_unmasked = n - rng.integers(max(1, n - len(unmasked)), min(n - 1, len(masked)) + 1)
    chosen = [masked[i] for i in rng.choice(len(masked), n - n_unmasked, replace=False)]
    chosen += [unmasked[i] for i in rng.choice(len(unmasked), n_unmasked, replace=False)]
    return [chosen[i] for i in rng.permutation(len(chosen))]


def _grid_cells(n: int, size: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """``n`` distinct cells (x0, y0, x1, y1) of a grid whose row and column widths vary."""
    rows, cols = _LAYOUTS[n][rng.integers(len(_LAYOUTS[n]))]

    def cuts(k: int) -> np.ndarray:
        shares = rng.uniform(0.75, 1.25, k)
        return np.round(np.concatenate([[0], np.cumsum(shares) / shares.sum()]) * size).astype(int)

    xs, ys = cuts(cols), cuts(rows)
    cells = [(xs[c], ys[r], xs[c + 1], ys[r + 1]) for r in range(rows) for c in range(cols)]
    return [cells[i] for i in rng.choice(len(cells), n, replace=False)]


def _paste(photo, face, cell, rng, max_rotation, face_scale, jitter) -> None:
    """Jitter, resize, rotate and alpha-blend ``face`` somewhere inside ``cell`` of ``photo``."""
    x0, y0, x1, y1 = cell
    pad = max(1, round(0.03 * min(x1 - x0, y1 - y0)))
    room_w, room_h = x1 - x0 - 2 * pad, y1 - y0 - 2 * pad
    height, width = face.shape[:2]
    angle = rng.uniform(-max_rotation, max_rotation)
    cos, sin = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
    box_w, box_h = width * cos + height * sin, width * sin + height * cos  # rotated bounds at 1x
    scale = min(room_w / box_w, room_h / box_h) * rng.uniform(*face_scale)
    out_w, out_h = max(1, math.ceil(box_w * scale)), max(1, math.ceil(box_h * scale))
    left = x0 + pad + rng.integers(0, max(room_w - out_w, 0) + 1)
    top = y0 + pad + rng.integers(0, max(room_h - out_h, 0) + 1)
    if scale < 1:  # shrink first with area averaging, then rotate at the final size
        small = (max(1, round(width * scale)), max(1, round(height * scale)))
        face = cv2.resize(face, small, interpolation=cv2.INTER_AREA)
        height, width = face.shape[:2]
        scale_after = min(
            out_w / (width * cos + height * sin), out_h / (width * sin + height * cos)
        )
    else:
        scale_after = scale
    face = face[:, ::-1] if rng.random() < 0.5 else face  # a mirrored face wears the same mask
    face = face.astype(np.float32)
    contrast, brightness = 1 + rng.uniform(-jitter, jitter, 2)
    mean = face.mean()
    face = np.clip(((face - mean) * contrast + mean) * brightness, 0, 255)
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, scale_after)
    matrix[:, 2] += ((out_w - 1) / 2 - (width - 1) / 2, (out_h - 1) / 2 - (height - 1) / 2)
    warped = cv2.warpAffine(
        np.ascontiguousarray(face), matrix, (out_w, out_h), flags=cv2.INTER_LINEAR
    )
    alpha = cv2.warpAffine(
        np.ones((height, width), np.float32), matrix, (out_w, out_h), flags=cv2.INTER_LINEAR
    )[..., None]
    out_h, out_w = min(out_h, photo.shape[0] - top), min(out_w, photo.shape[1] - left)
    region = photo[top : top + out_h, left : left + out_w]
    region *= 1 - alpha[:out_h, :out_w]
    region += warped[:out_h, :out_w] * alpha[:out_h, :out_w]


def _write_jpeg(path: Path, image: np.ndarray, quality: int) -> None:
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the photo as JPEG")
    path.write_bytes(data.tobytes())
