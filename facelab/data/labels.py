"""Automatic labels: face orientation from the five landmarks, light direction from pixel brightness.

Left and right are as seen in the image. Both labellers give every sample a signed score (light:
positive = lit from the image's left; orientation: positive = turned towards the image's right),
compare its size with a threshold, and drop the samples whose score lies within a margin of that
threshold, as the seed authors dropped the images they could not label. ``margin=0`` keeps all.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from facelab.data.celeba_names import ALIGNED_SIZE, LANDMARK_COLUMNS
from facelab.data.images import ImageReadError, read_image, shrink_image
from facelab.data.skipped import SkipLog

# ----------------------------------------------------------------------------- orientation

# The yaw proxy of a head turned by an angle t is about r * tan(t), with r the depth of the nose
# tip in front of the eyes over the interocular distance: r ~ 0.45 for a generic adult head
# (3D face model used for head pose: pupils ~28 mm behind the nose tip, 63 mm apart) and r = 0.55
# measured on the synthetic faces (median proxy / tan(yaw) of the 2,000 renders of seeds 2-6 with
# |yaw| > 15). The classes split at 10 degrees: threshold r * tan(10 deg) = 0.079 .. 0.097 -> 0.09.
ORIENTATION_THRESHOLD = 0.09
# The margin spans that uncertainty about r plus the rounding of landmarks to whole pixels (one
# pixel is 0.026 of a 38-px interocular): proxies in 0.06 .. 0.12 (about 6 .. 15 degrees) are
# dropped. On those 2,000 synthetic faces: 0.999 agreement with truth on the 90.0% kept (0.981
# with nothing dropped). On the 2,371 real CelebA landmarks it keeps 77%: 48% center, 31% left,
# 21% right.
ORIENTATION_MARGIN = 0.03

_ORIENTATION_COLUMNS = ("lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y")


def _check_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what} lacks the columns {missing}; expected the CelebA landmark columns "
            f"{list(LANDMARK_COLUMNS)} (read list_landmarks_align_celeba.txt with "
            "facelab.data.celeba or pandas sep=r'\\s+', skiprows=1)"
        )


def yaw_proxy(landmarks: pd.DataFrame) -> pd.Series:
    """Signed yaw proxy per row: nose offset from the eyes' midpoint over the interocular distance.

    Measured along the line through the eyes, so it equals ``(nose_x - (lefteye_x + righteye_x) / 2)
    / interocular`` when the eyes are level (aligned CelebA) and ignores head roll otherwise.
    Negative = turned towards the image's left; NaN where the landmarks are missing or degenerate.
    """
    _check_columns(landmarks, _ORIENTATION_COLUMNS, "the landmarks frame")
    pts = landmarks[list(_ORIENTATION_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    pts = pts.to_numpy(np.float64)
    ex, ey = pts[:, 2] - pts[:, 0], pts[:, 3] - pts[:, 1]
    nx = pts[:, 4] - (pts[:, 0] + pts[:, 2]) / 2
    ny = pts[:, 5] - (pts[:, 1] + pts[:, 3]) / 2
    d2 = ex * ex + ey * ey
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(d2 > 0, (nx * ex + ny * ey) / d2, np.nan)
    # the eye with the larger x is the image-right one whichever column holds it
    score = np.where(ex < 0, -score, score)
    score[~np.isfinite(score)] = np.nan
    return pd.Series(score, index=landmarks.index, name="score")


def _three_way(score: np.ndarray, threshold: float, positive: str, negative: str) -> np.ndarray:
    return np.where(score > threshold, positive, np.where(score < -threshold, negative, "center"))


def label_orientation(
    landmarks: pd.DataFrame,
    threshold: float = ORIENTATION_THRESHOLD,
    margin: float = ORIENTATION_MARGIN,
) -> pd.DataFrame:
    """Orientation labels (left/center/right) from landmarks, indexed like the input.

    Columns ``label, score`` (the yaw proxy). Rows with |score| within ``margin`` of ``threshold``
    and rows with missing or degenerate landmarks are dropped; ``attrs`` counts both.
    """
    if threshold < 0 or margin < 0:
        raise ValueError(f"threshold and margin must be >= 0, got {threshold} and {margin}")
    score = yaw_proxy(landmarks)
    valid = score.notna().to_numpy()
    values = score.to_numpy()
    sure = np.abs(np.abs(values) - threshold) >= margin
    keep = valid & (sure if margin > 0 else True)
    labels = _three_way(values, threshold, positive="right", negative="left")
    out = pd.DataFrame({"label": labels[keep], "score": values[keep]}, index=landmarks.index[keep])
    out.attrs["dropped_invalid"] = int((~valid).sum())
    out.attrs["dropped_ambiguous"] = int((valid & ~keep).sum())
    return out


# ----------------------------------------------------------------------------- light

# Pixels brighter than this in HSV V (0..255) count as highlights: the seed report's threshold.
HIGHLIGHT_V = 170
# The light score is measured on light, not on encoded pixel values. Photos (JPEG, PNG; CelebA)
# are sRGB-encoded: V is decoded as (V / 255) ** 2.2 first. Extended Yale B was shot with a camera
# of linear response (Georghiades et al. 2001), so its values are used as they are (linear=True);
# the data agree: the residual of a rank-3 Lambertian fit to each subject's images lit from within
# 25 degrees is lowest for exponents 0.7 .. 1.0 and highest for 2.2 (0.297 at 1.0 vs 0.340 at 2.2).
# Without decoding, synthetic sRGB faces lit from 20-30 degrees scored 0.57 of the threshold,
# Yale B faces lit from 20 degrees 1.37 of it.
SRGB_GAMMA = 2.2

# The light score is the horizontal centroid of the face's light^2 ("light energy"), in
# half-widths of the face box, positive = image-left brighter. Calibrated by calibrate_light() on
# all 1,710 lit Extended Yale B images (27 subjects; 375 center, 668 left, 667 right), 9-fold
# GroupKFold over subjects: cross-validated accuracy 0.954 with nothing dropped (in-sample 0.955
# at 0.1577), 0.989 on the 83.9% kept with each fold's own margin (in-sample 0.990 on 83.7%).
# The naive rule, (L - R) / (L + R) of the mean V of the two halves, reaches 0.948 cross-validated
# (0.951 in-sample at its best threshold 0.166). The V > 170 highlight shares are reported by
# light_features but left out of the score: mixed in, they lowered the cross-validated accuracy
# (0.953 -> 0.948 at weight 0.1, 0.916 at weight 0.5, scores scaled to unit spread).
LIGHT_THRESHOLD = 0.1577
# Smallest margin giving >= 99% accuracy on the kept Yale B images (all 1,710; 83.7% kept).
LIGHT_MARGIN = 0.0339
# A face region whose 99th-percentile V is below this is too dark to see the light (4 Yale B
# images, three of them black frames where the flash did not fire); dropped whenever margin > 0.
MIN_PEAK_V = 12.0
# A sure label must hold across the face: each horizontal third of the face box (top, middle,
# bottom) must get the same label as the whole box. Hair, a beard or a bright background in one
# part of the box moves that part's score; a light moves all three. Yale B, CV as above: 0.989 on
# 83.9% kept with the rule, 0.989 on 86.5% without it (each with its own fitted margin). Where it
# matters is off Yale B: on 2,000 synthetic faces (seeds 2-6, n=400 each) 0.994 on 78.8% kept
# with the rule, 0.957 on 93.5% without it.
BANDS = ("top", "middle", "bottom")
# Larger photos are shrunk (area averaging) before their light is measured: the features are
# shares and centroids, so a 10,000 px photo gives the same label in a fraction of the time.
LIGHT_MAX_SIDE = 512
# Target accuracy on kept samples that calibrate_light() picks the margin for.
LIGHT_KEPT_ACCURACY = 0.99

# The face box of CelebA-aligned images (any size with the 178:218 aspect), as fractions of width
# and height: the Extended Yale B crop's framing (eyes at 0.60 of its width apart and 0.23 of its
# height from the top, eyes-to-mouth 0.54 of its height) placed on the mean CelebA landmarks
# (eyes at x 69.3 / 107.7, y 111.2; mouth y 152.2 in 178x218): x 57..120, y 94..170, made
# symmetric about the image centre so a mirrored image gets exactly the mirrored score.
CELEBA_FACE_BOX = (0.32, 0.43, 0.68, 0.78)
_YALE_HALF_WIDTH = 0.832  # half the crop's width, in interocular distances
_YALE_TOP, _YALE_BOTTOM = 0.427, 1.437  # crop edges above / below the eyes, in eyes-to-mouth
_ASPECT_TOLERANCE = 0.03

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) as fractions of width and height


def default_face_box(shape: Sequence[int]) -> Box:
    """The face region for an image of ``shape``: the CelebA face box at 178:218, else the whole image."""
    height, width = shape[0], shape[1]
    aligned = ALIGNED_SIZE[0] / ALIGNED_SIZE[1]
    if abs(width / height / aligned - 1) <= _ASPECT_TOLERANCE:
        return CELEBA_FACE_BOX
    return (0.0, 0.0, 1.0, 1.0)


def face_boxes_from_landmarks(
    landmarks: pd.DataFrame, frame_size: tuple[int, int] = ALIGNED_SIZE
) -> pd.Series:
    """Per row, the Yale-B-like face box around the landmarks, as fractions of ``frame_size`` (w, h).

    Rows whose landmarks are missing or degenerate get None (the default box is used for them).
    """
    _check_columns(landmarks, LANDMARK_COLUMNS, "the landmarks frame")
    pts = landmarks[list(LANDMARK_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    p = pts.to_numpy(np.float64)
    cx, cy = (p[:, 0] + p[:, 2]) / 2, (p[:, 1] + p[:, 3]) / 2
    interocular = np.hypot(p[:, 2] - p[:, 0], p[:, 3] - p[:, 1])
    eyes_to_mouth = (p[:, 7] + p[:, 9]) / 2 - cy
    width, height = frame_size
    boxes = []
    for i in range(len(p)):
        if not (interocular[i] > 0 and eyes_to_mouth[i] > 0 and np.isfinite(p[i]).all()):
            boxes.append(None)
            continue
        half = _YALE_HALF_WIDTH * interocular[i]
        boxes.append(
            (
                (cx[i] - half) / width,
                (cy[i] - _YALE_TOP * eyes_to_mouth[i]) / height,
                (cx[i] + half) / width,
                (cy[i] + _YALE_BOTTOM * eyes_to_mouth[i]) / height,
            )
        )
    return pd.Series(boxes, index=landmarks.index, name="box", dtype=object)


def _value_channel(image: np.ndarray) -> np.ndarray:
    """HSV V (max over channels) as float32 0..255, from uint8 or float (0..1 or 0..255) images."""
    image = np.asarray(image)
    if image.ndim == 3:
        image = image.max(axis=2)  # HSV V = max(R, G, B)
    elif image.ndim != 2:
        raise ValueError(f"expected an image (H, W) or (H, W, C), got shape {image.shape}")
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and image.size and image.max() <= 1.0:
            image = image * 255.0
        image = np.clip(image, 0, 255)
    return image.astype(np.float32)


def _crop(v: np.ndarray, box: Box | None) -> np.ndarray:
    box = default_face_box(v.shape) if box is None else box
    height, width = v.shape
    x0 = int(round(np.clip(box[0], 0, 1) * width))
    x1 = int(round(np.clip(box[2], 0, 1) * width))
    y0 = int(round(np.clip(box[1], 0, 1) * height))
    y1 = int(round(np.clip(box[3], 0, 1) * height))
    if x1 - x0 < 2 or y1 - y0 < 1:
        raise ValueError(f"face box {box} leaves fewer than 2x1 pixels of a {width}x{height} image")
    return v[y0:y1, x0:x1]


def _centroid(energy: np.ndarray) -> float:
    """Horizontal centroid of ``energy`` in half-widths, positive towards the image's left."""
    columns = energy.sum(axis=0, dtype=np.float64)
    width = len(columns)
    x = (np.arange(width) - (width - 1) / 2) / (width / 2)  # -1 image-left .. +1 image-right
    mass = float(columns.sum())
    return float(-(columns @ x) / mass) if mass > 0 else 0.0


def light_features(
    image: np.ndarray, box: Box | None = None, linear: bool = False
) -> dict[str, float]:
    """Brightness features of the face region in HSV V (positive = the image's left half brighter).

    ``centroid`` (the light score, on light decoded from sRGB unless ``linear``), ``asymmetry``
    ((L - R) / (L + R) of mean V), V > 170 highlight shares per half and their difference, ``peak``
    (99th percentile V), ``brightness`` and the centroid of each horizontal third of the face
    (``centroid_top``, ...). ``box``: (x0, y0, x1, y1) as fractions of the image.
    """
    face = _crop(_value_channel(shrink_image(np.asarray(image), LIGHT_MAX_SIDE)), box)
    width = face.shape[1]
    half = width // 2
    left, right = face[:, :half], face[:, width - half :]
    mean_left, mean_right = float(left.mean()), float(right.mean())
    total = mean_left + mean_right
    high_left = float((left > HIGHLIGHT_V).mean())
    high_right = float((right > HIGHLIGHT_V).mean())
    light = face / 255.0 if linear else (face / 255.0) ** SRGB_GAMMA
    energy = light * light
    edges = np.linspace(0, face.shape[0], len(BANDS) + 1).round().astype(int)
    bands = {
        f"centroid_{name}": _centroid(energy[top:bottom])
        for name, top, bottom in zip(BANDS, edges[:-1], edges[1:], strict=True)
    }
    return {
        "centroid": _centroid(energy),
        **bands,
        "asymmetry": (mean_left - mean_right) / total if total > 0 else 0.0,
        "highlight_left": high_left,
        "highlight_right": high_right,
        "highlight_asymmetry": high_left - high_right,
        "peak": float(np.percentile(face, 99)),
        "brightness": float(face.mean()),
    }


def light_score(image: np.ndarray, box: Box | None = None, linear: bool = False) -> float:
    """The light score of one image: > 0 lit from the image's left, < 0 from its right."""
    return light_features(image, box, linear)["centroid"]


def light_feature_frame(
    paths_or_images: Sequence[str | os.PathLike | np.ndarray],
    boxes: Sequence[Box | None] | None = None,
    skip_log: SkipLog | None = None,
    linear: bool = False,
) -> pd.DataFrame:
    """One row of :func:`light_features` (plus ``path``) per readable input, indexed by position.

    Unreadable image files go to ``skip_log`` (a fresh one, which warns, when None).
    """
    items = list(paths_or_images)
    boxes = None if boxes is None else list(boxes)
    if boxes is not None and len(boxes) != len(items):
        raise ValueError(f"got {len(boxes)} boxes for {len(items)} images; pass one per image")
    skip_log = SkipLog() if skip_log is None else skip_log
    rows, index = [], []
    for i, item in enumerate(items):
        is_array = isinstance(item, np.ndarray)
        path = "" if is_array else str(item)
        try:
            image = item if is_array else read_image(item)
        except ImageReadError as err:
            skip_log.add(err.path, err.reason)
            continue
        box = None if boxes is None else boxes[i]
        rows.append({"path": path, **light_features(image, box, linear)})
        index.append(i)
    columns = ["path", *light_features(np.zeros((2, 2), np.uint8), (0, 0, 1, 1))]
    return pd.DataFrame(rows, index=pd.Index(index), columns=columns)


def _light_keep(features: pd.DataFrame, threshold: float, margin: float) -> np.ndarray:
    """Sure samples: score at least ``margin`` from the threshold, face bright enough to judge, and
    the same label from every horizontal third of the face as from the whole face."""
    if margin <= 0:
        return np.ones(len(features), bool)
    score = features["centroid"].to_numpy()
    keep = np.abs(np.abs(score) - threshold) >= margin
    keep &= features["peak"].to_numpy() >= MIN_PEAK_V
    label = _three_way(score, threshold, positive="left", negative="right")
    for name in BANDS:
        band = features[f"centroid_{name}"].to_numpy()
        keep &= _three_way(band, threshold, positive="left", negative="right") == label
    return keep


def label_light(
    paths_or_images: Sequence[str | os.PathLike | np.ndarray],
    margin: float = LIGHT_MARGIN,
    skip_log: SkipLog | None = None,
    boxes: Sequence[Box | None] | None = None,
    threshold: float = LIGHT_THRESHOLD,
    linear: bool = False,
) -> pd.DataFrame:
    """Light labels (left/center/right) of image files or arrays: columns ``path, label, score``.

    Keeps the samples scored at least ``margin`` from the threshold, bright enough to judge and
    labelled alike in each third of the face; ``margin=0`` labels every readable image. Indexed by
    input position. ``linear=True`` for values proportional to light (Yale B), not sRGB photos.
    """
    if threshold < 0 or margin < 0:
        raise ValueError(f"threshold and margin must be >= 0, got {threshold} and {margin}")
    features = light_feature_frame(paths_or_images, boxes, skip_log, linear)
    keep = _light_keep(features, threshold, margin)
    score = features["centroid"].to_numpy()
    out = pd.DataFrame(
        {
            "path": features["path"].to_numpy()[keep],
            "label": _three_way(score, threshold, positive="left", negative="right")[keep],
            "score": score[keep],
        },
        index=features.index[keep],
    )
    out.attrs["dropped_ambiguous"] = int((~keep).sum())
    return out


# ----------------------------------------------------------------------------- calibration


def _best_threshold(score: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximising the three-way accuracy of ``score`` against ``label``."""
    size = np.abs(score)
    order = np.argsort(size, kind="stable")
    size = size[order]
    center = (label == "center")[order]
    side_ok = (((label == "left") & (score > 0)) | ((label == "right") & (score < 0)))[order]
    # with threshold between size[k-1] and size[k], the first k samples are called center
    correct = (
        np.concatenate([[0], np.cumsum(center)])
        + side_ok.sum()
        - np.concatenate([[0], np.cumsum(side_ok)])
    )
    best = np.flatnonzero(correct == correct.max())
    k = int(best[len(best) // 2])
    bounds = np.concatenate([[0.0], size, [size[-1] + 1e-3 if len(size) else 1.0]])
    threshold = (bounds[k] + bounds[k + 1]) / 2 if k > 0 else 0.0
    return float(threshold), float(correct[k] / len(score))


def _smallest_margin(
    features: pd.DataFrame, label: np.ndarray, threshold: float, target: float
) -> float:
    score = features["centroid"].to_numpy()
    predicted = _three_way(score, threshold, positive="left", negative="right")
    for margin in np.linspace(0, threshold, 201)[1:]:
        keep = _light_keep(features, threshold, margin)
        if keep.any() and (predicted[keep] == label[keep]).mean() >= target:
            return float(margin)
    return float(threshold)


def _evaluate(features: pd.DataFrame, label: np.ndarray, threshold: float, margin: float) -> dict:
    score = features["centroid"].to_numpy()
    predicted = _three_way(score, threshold, positive="left", negative="right")
    keep = _light_keep(features, threshold, margin)
    return {
        "accuracy": float((predicted == label).mean()),
        "kept_accuracy": float((predicted[keep] == label[keep]).mean()) if keep.any() else 0.0,
        "kept_fraction": float(keep.mean()),
    }


def calibrate_light(
    frame: pd.DataFrame,
    n_splits: int = 9,
    target: float = LIGHT_KEPT_ACCURACY,
    features: pd.DataFrame | None = None,
    linear: bool = True,
) -> dict:
    """Fit the light threshold and margin on a frame with ``path, label, group`` (Yale B: read_yaleb).

    Reports subject-disjoint cross-validated accuracy (GroupKFold over ``group``) for the score and
    the naive half-mean rule, then the threshold and margin fitted on all rows. ``features`` may
    hold precomputed :func:`light_feature_frame` rows aligned with ``frame``; ``linear`` as in
    :func:`label_light` (True: Extended Yale B's camera is linear).
    """
    for column in ("path", "label", "group"):
        if column not in frame.columns:
            raise ValueError(f"the calibration frame lacks column {column!r}; use read_yaleb()")
    if features is None:
        log = SkipLog()
        features = light_feature_frame(frame["path"].tolist(), skip_log=log, linear=linear)
        if len(log):
            raise ValueError(f"{len(log)} calibration images could not be read: {log.rows[:3]}")
    label = frame["label"].to_numpy()
    groups = frame["group"].to_numpy()
    naive = features.assign(centroid=features["asymmetry"])
    score = features["centroid"].to_numpy()
    predicted = np.empty(len(frame), object)  # held-out labels, each from its own fold's fit
    predicted_naive = np.empty(len(frame), object)
    keep = np.zeros(len(frame), bool)
    for train, test in GroupKFold(n_splits=n_splits).split(features, label, groups):
        threshold, _ = _best_threshold(score[train], label[train])
        margin = _smallest_margin(features.iloc[train], label[train], threshold, target)
        predicted[test] = _three_way(score[test], threshold, positive="left", negative="right")
        keep[test] = _light_keep(features.iloc[test], threshold, margin)
        naive_threshold, _ = _best_threshold(naive["centroid"].to_numpy()[train], label[train])
        predicted_naive[test] = _three_way(
            naive["centroid"].to_numpy()[test], naive_threshold, positive="left", negative="right"
        )
    threshold, accuracy = _best_threshold(features["centroid"].to_numpy(), label)
    margin = _smallest_margin(features, label, threshold, target)
    naive_threshold, naive_accuracy = _best_threshold(naive["centroid"].to_numpy(), label)
    fitted = _evaluate(features, label, threshold, margin)
    return {
        "threshold": threshold,
        "margin": margin,
        "n_images": len(frame),
        "n_groups": int(pd.Series(groups).nunique()),
        "cv_accuracy": float((predicted == label).mean()),
        "cv_kept_accuracy": float((predicted[keep] == label[keep]).mean()),
        "cv_kept_fraction": float(keep.mean()),
        "cv_naive_accuracy": float((predicted_naive == label).mean()),
        "accuracy": accuracy,
        "kept_accuracy": fitted["kept_accuracy"],
        "kept_fraction": fitted["kept_fraction"],
        "naive_threshold": naive_threshold,
        "naive_accuracy": naive_accuracy,
    }
