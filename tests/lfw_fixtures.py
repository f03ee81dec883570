"""A tiny LFW-format folder: generated faces, one folder per person, and official-format pairs files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

SIDE = 48  # generated image side in pixels (real LFW images are 250)


def person_face(person: int, image: int, side: int = SIDE) -> np.ndarray:
    """A grey 'face': a smooth pattern fixed per person, a little noise and shift per image."""
    pattern = np.random.default_rng(1000 + person).normal(0, 1, (4, 4))
    face = cv2.resize(pattern, (side, side), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(person * 100 + image)
    face = np.roll(face, rng.integers(-1, 2, size=2), axis=(0, 1))
    grey = 128 + 50 * face / (np.abs(face).max() + 1e-6) + rng.normal(0, 6, face.shape)
    return np.clip(grey, 0, 255).astype(np.uint8)


def make_lfw(root: Path, train_people: int = 12, test_people: int = 6, images: int = 3,
             n_train: int = 10, n_test: int = 6) -> Path:  # fmt: skip
    """Write ``root/lfw/<Name>/<Name>_<NNNN>.jpg`` and pairsDevTrain/Test.txt; returns ``root``."""
    names = [f"Person_{chr(65 + k // 26)}{chr(65 + k % 26)}" for k in range(train_people + test_people)]
    for k, name in enumerate(names):
        folder = root / "lfw" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(1, images + 1):
            cv2.imwrite(str(folder / f"{name}_{i:04d}.jpg"), person_face(k, i))
    rng = np.random.default_rng(0)
    for file, people, n in (
        ("pairsDevTrain.txt", names[:train_people], n_train),
        ("pairsDevTest.txt", names[train_people:], n_test),
    ):
        lines = [str(n)]
        for k in range(n):
            i, j = rng.choice(np.arange(1, images + 1), 2, replace=False)
            lines.append(f"{people[k % len(people)]}\t{i}\t{j}")
        for k in range(n):
            a, b = rng.choice(len(people), 2, replace=False)
            lines.append(f"{people[a]}\t{rng.integers(1, images + 1)}\t{people[b]}\t{rng.integers(1, images + 1)}")
        (root / file).write_text("\n".join(lines) + "\n")
    return root
