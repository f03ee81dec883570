"""Near-duplicate images: found by perceptual hash and kept in one split."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from facelab.data import duplicates
from facelab.data.duplicates import find_duplicates, near_duplicate_pairs
from facelab.data.skipped import SkipLog
from facelab.data.split import split_frame
from tests.conftest import shared_data
from tests.test_split import run_split


def scene(seed: int, size: int = 96) -> np.ndarray:
    """A photo-like BGR image: a smooth random background with a few blurred blobs."""
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.uniform(0, 255, (4, 4, 3)), (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(4):
        centre = tuple(int(v) for v in rng.integers(10, size - 10, 2))
        axes = tuple(int(v) for v in rng.integers(6, size // 3, 2))
        colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    return np.clip(cv2.GaussianBlur(image, (0, 0), 2), 0, 255).astype(np.uint8)


@pytest.fixture
def photos(tmp_path):
    """Eight different photos, and copies of photo 0 re-saved, resized and as PNG; one bad file."""
    paths = []
    for i in range(8):
        path = tmp_path / f"photo{i}.jpg"
        cv2.imwrite(str(path), scene(i), [cv2.IMWRITE_JPEG_QUALITY, 95])
        paths.append(str(path))
    original = scene(0)
    copies = {
        "resaved.jpg": (original, [cv2.IMWRITE_JPEG_QUALITY, 50]),
        "half.jpg": (cv2.resize(original, (48, 48), interpolation=cv2.INTER_AREA), []),
        "copy.png": (original, []),
    }
    for name, (image, params) in copies.items():
        cv2.imwrite(str(tmp_path / name), image, params)
        paths.append(str(tmp_path / name))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    paths.append(str(tmp_path / "broken.jpg"))
    return paths


def test_copies_resaves_and_resized_versions_form_one_set_and_other_photos_none(photos):
    skipped = SkipLog(max_warnings=0)
    sets = find_duplicates(photos, skip_log=skipped, progress=False)
    assert sets.name == "duplicate_set"
    assert list(sets[[0, 8, 9, 10]]) == ["dup0"] * 4
    assert (sets[1:8] == "").all(), "different photos must not be called duplicates"
    assert sets.iloc[-1] == "" and skipped.rows == [(photos[-1], skipped.rows[0][1])]


def test_pairs_found_block_by_block_are_the_brute_force_pairs(monkeypatch):
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 300, dtype=np.uint64)
    hashes[rng.integers(0, 300, 40)] = hashes[rng.integers(0, 300, 40)]  # some exact twins
    hashes[5] = hashes[250] ^ np.uint64(0b1011)  # 3 bits apart
    monkeypatch.setattr(duplicates, "_BLOCK_ELEMENTS", 64 * 300)  # blocks of 64 rows
    bits = np.unpackbits(hashes.view(np.uint8).reshape(-1, 8), axis=1)
    distance = (bits[:, None, :] != bits[None, :, :]).sum(axis=2)
    for limit in (0, 3):
        expected = {(i, j) for i, j in zip(*np.nonzero(distance <= limit), strict=True) if i < j}
        assert {tuple(p) for p in near_duplicate_pairs(hashes, limit).tolist()} == expected
    assert (5, 250) in {tuple(p) for p in near_duplicate_pairs(hashes, 3).tolist()}


def test_split_keeps_each_duplicate_set_in_one_split_together_with_its_groups():
    n = 600
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({
        "path": [f"{i}.jpg" for i in range(n)],
        "label": rng.choice(["with_mask", "without_mask"], n),
        "group": [f"person{i // 2}" if i < 100 else "" for i in range(n)],
        "duplicate_set": [f"dup{i // 3}" if 90 <= i < 300 else "" for i in range(n)],
    })  # fmt: skip
    for seed in range(5):
        split = frame.assign(split=split_frame(frame, seed=seed))
        sets = split[split["duplicate_set"] != ""]
        assert (sets.groupby("duplicate_set")["split"].nunique() == 1).all()
        people = split[split["group"] != ""]
        assert (people.groupby("group")["split"].nunique() == 1).all()
        # rows 90-95 are chained through person45-47 and dup30-31: one split for all of them
        assert split.loc[90:95, "split"].nunique() == 1
    assert split["split"].value_counts(normalize=True)["train"] == pytest.approx(0.7, abs=0.05)


def test_split_dataset_finds_duplicates_writes_the_column_and_reports(photos, tmp_path):
    frame = pd.DataFrame({"path": photos[:-1], "label": ["a", "b"] * 5 + ["a"]})
    frame.loc[[0, 8, 9, 10], "label"] = "a"
    frame.to_csv(tmp_path / "labels.csv", index=False)
    result = run_split("--manifest", "labels.csv", "--out", "split.csv", "--ratios", "0.5", "0.5",
                       "--split", "shuffle", "--find-duplicates", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "near-duplicates: 1 set holding 4 images; 0 span more than one split" in result.stdout
    out = pd.read_csv(tmp_path / "split.csv", keep_default_na=False)
    assert list(out.loc[[0, 8, 9, 10], "duplicate_set"]) == ["dup0"] * 4
    assert out.loc[[0, 8, 9, 10], "split"].nunique() == 1
    # A later split of the written manifest follows the column without hashing again.
    again = run_split("--manifest", "split.csv", "--out", "again.csv", "--ratios", "0.5", "0.5",
                      "--seed", "7", cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "hash" not in again.stderr and "0 span more than one split" in again.stdout


def test_real_mask_folder_holds_copies_that_a_plain_split_would_scatter():
    masks = shared_data("masks")
    paths = sorted(str(p) for p in (masks / "without_mask").glob("*.jpg"))[:400]
    sets = find_duplicates(paths, progress=False)
    named = sets[sets != ""]
    assert named.nunique() >= 3, "the folder is known to hold re-saved and augmented copies"
    frame = pd.DataFrame({"path": paths, "label": "without_mask", "duplicate_set": sets})
    split = split_frame(frame.assign(duplicate_set=""), seed=42)
    scattered = frame.assign(split=split)[sets != ""].groupby("duplicate_set")["split"].nunique()
    assert (scattered > 1).any(), "without the sets, a plain split puts copies in two splits"
    kept = frame.assign(split=split_frame(frame, seed=42))[sets != ""]
    assert (kept.groupby("duplicate_set")["split"].nunique() == 1).all()


def test_images_too_alike_for_the_hash_give_a_warning_that_says_what_to_do(tmp_path):
    paths = []
    for i in range(30):  # one drawing in slightly different colours: one big set
        image = np.full((64, 64, 3), 120 + i % 3, np.uint8)
        cv2.circle(image, (32, 32), 20, (200, 180, 160), -1)
        paths.append(str(tmp_path / f"{i}.png"))
        cv2.imwrite(paths[-1], image)
    with pytest.warns(UserWarning, match="holds 30 of 30 images.*--duplicate-distance"):
        sets = find_duplicates(paths, progress=False)
    assert sets.nunique() == 1
