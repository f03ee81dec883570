"""A miniature Adience: the synthetic faces of `synthetic.py`, photographed the Adience way.

`render_adience` writes the real Adience layout: `faces/<user_id>/landmark_aligned_face.<face_id>.
<original_image>` JPEGs and the five tab-separated `fold_frontal_K_data.txt` files. Each user is
one synthetic person and all of a person's photos lie in one fold. The domain differs from the
synthetic CelebA as the real Adience differs from CelebA: square, looser crops (256x256), more
roll, colour casts, lower contrast, low-resolution blur, sensor noise and stronger JPEG loss.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from facelab.data import synthetic
from facelab.data.synthetic import Identity, Look, draw_face, sample_identity, sample_look
from facelab.io import atomic_write_csv, atomic_write_text

MARKER = synthetic.MARKER  # the same marker file name; its "generator" says which renderer
_GENERATOR = "facelab.data.synthetic_adience.render_adience"
FACE_DIR = "faces"
FOLDS = 5
FOLD_FILE = "fold_frontal_{}_data.txt"
FOLD_COLUMNS = (
    "user_id", "original_image", "face_id", "age", "gender", "x", "y", "dx", "dy", "tilt_ang",
    "fiducial_yaw_angle", "fiducial_score",
)  # fmt: skip
SIZE = (256, 256)  # (width, height) written; the real aligned faces are about 816x816
_RENDER_SIZE = (144, 144)  # drawn this small (the faces are low-resolution anyway), then scaled
PHOTOS_PER_PERSON = 8  # on average; the real frontal folds have about 5-15 per user
_YOUNG_AGES = ("(15, 20)", "(25, 32)", "(25, 32)", "(38, 43)")
_OLD_AGES = ("(38, 43)", "(48, 53)", "(60, 100)")
_UNKNOWN_SHARE = 0.02  # photos whose gender is "u"
_EMPTY_SHARE = 0.01  # photos whose gender field is empty


def adience_look(rng: np.random.Generator, person: Identity) -> Look:
    """One Adience-style photo's look: a CelebA look re-framed (smaller face, more roll, frontal)."""
    look = sample_look(rng, person, yaw=float(np.clip(rng.normal(0, 12), -35, 35)))
    return dataclasses.replace(
        look,
        roll=float(np.clip(rng.normal(0, 10), -25, 25)),
        scale=float(rng.uniform(0.82, 1.0)),
        shift=(float(rng.normal(0, 5)), float(rng.normal(-8, 4))),
        exposure=float(rng.uniform(0.7, 1.25)),
        blurry=False,  # every photo gets the Adience degradation below instead
        jpeg_quality=int(rng.integers(45, 80)),
    )


def degrade(
    image: np.ndarray, rng: np.random.Generator, size: tuple[int, int] = SIZE
) -> np.ndarray:
    """The Adience camera: colour cast, low contrast, low resolution, blur and noise.

    Takes and returns RGB uint8; the result is ``size`` (width, height).
    """
    w, h = size
    img = image.astype(np.float32)
    cast = np.array([1.0, 1.0, 1.0]) + rng.choice([-1, 1]) * np.array([0.12, 0.02, -0.12])
    img *= (cast * rng.uniform(0.9, 1.1, 3)).astype(np.float32)
    mean = img.mean(axis=(0, 1), keepdims=True)
    img = mean + rng.uniform(0.55, 0.85) * (img - mean) + rng.uniform(-15, 15)
    side = int(rng.integers(56, 112))  # the face was small in the original photo
    img = np.clip(img, 0, 255)  # the sensor saturates
    small = cv2.resize(img, (side, side * h // w), interpolation=cv2.INTER_AREA)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.6, 1.6)))
    img += np.float32(rng.uniform(2, 6)) * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _people(n: int, seed: int) -> tuple[list[dict], np.ndarray]:
    """The people (user id, face id, traits, fold) and which person each photo shows."""
    count = min(n, max(FOLDS, round(n / PHOTOS_PER_PERSON)))
    rng = np.random.default_rng([seed, 21])
    users = 10**7 + rng.choice(9 * 10**7, size=count, replace=False)  # Flickr-like 8 digits
    extra = rng.multinomial(n - count, rng.dirichlet(np.full(count, 2.0)))
    photos = 1 + extra
    fold_size = np.zeros(FOLDS, dtype=np.int64)
    fold = np.empty(count, dtype=np.int64)
    # Largest person first into the fold with fewest photos: folds of about equal size.
    for k in sorted(range(count), key=lambda k: (-photos[k], rng.random())):
        fold[k] = int(np.argmin(fold_size))
        fold_size[fold[k]] += photos[k]
    people = []
    for k in range(count):
        trng = np.random.default_rng([seed, 22, k])
        person = sample_identity(trng, k + 1, male=bool(trng.random() < 0.46))
        people.append(
            {
                "user_id": f"{users[k]}@N{int(trng.integers(0, 9)):02d}",
                "face_id": int(k + 1),
                "identity": person,
                "fold": int(fold[k]),
                "age": str(trng.choice(_YOUNG_AGES if person.young else _OLD_AGES)),
            }
        )
    owner = rng.permutation(np.repeat(np.arange(count), photos))
    return people, owner


def _render_one(job: tuple[int, int, dict, str]) -> dict:
    """Render and write photo `index`; returns its fold-file row (and truth columns)."""
    index, seed, person, out = job
    rng = np.random.default_rng([seed, 23, index])
    p: Identity = person["identity"]
    look = adience_look(rng, p)
    image, _, _ = draw_face(p, look, rng, _RENDER_SIZE)
    image = degrade(image, rng)
    original = f"{int(rng.integers(10**9, 10**10))}_{rng.bytes(5).hex()}_o.jpg"
    name = f"landmark_aligned_face.{person['face_id']}.{original}"
    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, look.jpeg_quality])
    if not ok:
        raise RuntimeError(f"{name}: OpenCV could not encode the rendered face as JPEG")
    folder = Path(out, FACE_DIR, person["user_id"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data.tobytes())
    x, y = (int(v) for v in rng.integers(0, 1200, 2))
    box = int(rng.integers(300, 1400))
    return {
        "user_id": person["user_id"],
        "original_image": original,
        "face_id": person["face_id"],
        "age": person["age"],
        "gender": "m" if p.male else "f",
        "x": x,
        "y": y,
        "dx": box,
        "dy": box + int(rng.integers(-40, 40)),
        "tilt_ang": int(round(-look.roll)),
        "fiducial_yaw_angle": int(round(look.yaw)),
        "fiducial_score": int(rng.integers(-20, 120)),
        "fold": person["fold"],
        "male": int(p.male),
        "yaw": round(look.yaw, 2),
        "roll": round(look.roll, 2),
    }


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: is a file, not a folder; choose another output folder")
    if not out.exists() or not any(out.iterdir()):
        return
    try:
        marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        marker = None
    if not isinstance(marker, dict) or marker.get("generator") != _GENERATOR:
        raise FileExistsError(
            f"{out}: folder is not empty and is not a facelab synthetic Adience (no {MARKER} "
            "from render_adience); refusing to write into it. Choose an empty or new folder."
        )


def _clear_previous(out: Path) -> None:
    """Remove the photos and fold files of an earlier render in a folder we own (nothing else)."""
    for k in range(FOLDS):
        (out / FOLD_FILE.format(k)).unlink(missing_ok=True)
    faces = out / FACE_DIR
    if not faces.is_dir():
        return
    for folder in faces.iterdir():
        if not folder.is_dir():
            continue
        for f in folder.glob("landmark_aligned_face.*.jpg"):
            f.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()


def _write_folds(out: Path, rows: list[dict], seed: int) -> None:
    frame = pd.DataFrame(rows)
    rng = np.random.default_rng([seed, 24])
    n_unknown = max(1, round(_UNKNOWN_SHARE * len(frame))) if len(frame) >= 10 else 0
    n_empty = max(1, round(_EMPTY_SHARE * len(frame))) if len(frame) >= 10 else 0
    chosen = rng.choice(len(frame), size=n_unknown + n_empty, replace=False)
    frame.loc[chosen[:n_unknown], "gender"] = "u"
    frame.loc[chosen[n_unknown:], "gender"] = ""
    frame = frame.sort_values(["fold", "user_id", "original_image"], kind="stable")
    for k in range(FOLDS):
        part = frame[frame["fold"] == k]
        lines = ["\t".join(FOLD_COLUMNS)]
        lines += ["\t".join(str(v) for v in row) for row in part[list(FOLD_COLUMNS)].to_numpy()]
        atomic_write_text("\n".join(lines) + "\n", out / FOLD_FILE.format(k))
    truth = frame[["user_id", "face_id", "original_image", "fold", "male", "yaw", "roll"]]
    atomic_write_csv(truth, out / "truth.csv")


def render_adience(
    out_dir: str | os.PathLike,
    n: int = 1500,
    seed: int = 0,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Render a miniature Adience (faces/ JPEGs, five fold files, truth.csv) into `out_dir`.

    Same (n, seed) gives byte-identical files, whatever `workers` (default: up to 2 processes).
    Refuses a non-empty folder that holds no earlier render_adience marker file.
    """
    if int(n) < FOLDS:
        raise ValueError(f"n must be at least {FOLDS} (one person per fold), got {n}")
    n = int(n)
    out = Path(out_dir)
    _check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        json.dumps({"generator": _GENERATOR, "n": n, "seed": seed}, indent=1) + "\n", out / MARKER
    )
    _clear_previous(out)
    people, owner = _people(n, seed)
    order = sorted(range(n), key=lambda i: (owner[i], i))  # a person's photos share a texture
    jobs = [(i, seed, people[owner[i]], str(out)) for i in order]
    rows = synthetic.render_in_order(
        _render_one, jobs, order, workers, "rendering Adience faces", progress
    )
    _write_folds(out, rows, seed)
    return out
