"""split_frame and split_dataset.py: stratified, group-disjoint, deterministic, non-destructive."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from facelab.data.split import split_frame
from tests.conftest import REPO


def frame_of(n: int, groups: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "path": [f"img/{i:06d}.jpg" for i in range(n)],
            "label": rng.choice(["left", "center", "right"], n, p=[0.2, 0.6, 0.2]),
            "group": rng.integers(0, groups, n).astype(str) if groups else "",
        }
    )


def assert_good_split(frame: pd.DataFrame, split: pd.Series, ratios=(0.7, 0.15, 0.15)):
    frame = frame.assign(split=split)
    grouped = frame[frame["group"] != ""]
    assert (grouped.groupby("group")["split"].nunique() == 1).all(), "a group spans two splits"
    whole = frame["label"].value_counts(normalize=True)
    shares = pd.crosstab(frame["split"], frame["label"], normalize="index")
    assert (shares - whole).abs().max().max() <= 0.02
    sizes = frame["split"].value_counts(normalize=True)
    for name, ratio in zip(("train", "val", "test"), ratios, strict=True):
        assert sizes[name] == pytest.approx(ratio, abs=0.03)


@pytest.mark.parametrize("groups", [0, 40, 800])
def test_split_is_stratified_and_group_disjoint(groups):
    frame = frame_of(4000, groups)
    assert_good_split(frame, split_frame(frame, seed=1))


def test_split_of_200k_rows_is_correct_and_fast():
    frame = frame_of(200_000, 10_177)
    start = time.perf_counter()
    split = split_frame(frame, seed=7)
    assert time.perf_counter() - start < 10
    assert_good_split(frame, split)


def test_same_seed_same_split_other_seed_other_split():
    frame = frame_of(2000, 300)
    assert split_frame(frame, seed=3).equals(split_frame(frame, seed=3))
    assert not split_frame(frame, seed=3).equals(split_frame(frame, seed=4))


def test_two_ratios_give_train_and_test_only():
    frame = frame_of(2000, 300)
    split = split_frame(frame, (0.9, 0.1), seed=0)
    assert set(split) == {"train", "test"}
    assert (split == "test").mean() == pytest.approx(0.1, abs=0.03)


@pytest.mark.parametrize("ratios", [(0.5, 0.6), (0.7, 0.3, 0.0), (1.0,)])
def test_bad_ratios_are_a_clear_error(ratios):
    with pytest.raises(ValueError, match="summing to 1"):
        split_frame(frame_of(100, 10), ratios)


def test_too_few_groups_is_a_clear_error():
    with pytest.raises(ValueError, match="only 2 group"):
        split_frame(frame_of(50, 2))


def run_split(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "split_dataset.py"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def digest(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture
def images_manifest(tmp_path):
    src = tmp_path / "faces"
    src.mkdir()
    frame = frame_of(120, 30)
    frame["path"] = [f"faces/{i:03d} ü.jpg" for i in range(len(frame))]
    for p in frame["path"]:
        (tmp_path / p).write_bytes(b"\xff\xd8\xff" + p.encode())
    frame.to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path


def test_split_dataset_cli_is_byte_identical_and_leaves_sources_alone(images_manifest):
    root = images_manifest
    before = digest(root / "faces")
    first = run_split("--manifest", "labels.csv", "--out", "a.csv", "--seed", "5", cwd=root)
    assert first.returncode == 0, first.stderr
    second = run_split("--manifest", "labels.csv", "--out", "b.csv", "--seed", "5", cwd=root)
    assert second.returncode == 0, second.stderr
    assert (root / "a.csv").read_bytes() == (root / "b.csv").read_bytes()
    out = pd.read_csv(root / "a.csv")
    assert list(out.columns[:4]) == ["path", "label", "split", "group"]
    assert digest(root / "faces") == before


def test_split_dataset_materializes_symlinks_and_copies(images_manifest):
    root = images_manifest
    before = digest(root / "faces")
    for mode in ("symlink", "copy"):
        result = run_split("--manifest", "labels.csv", "--out", "s.csv", "--materialize",
                           f"tree_{mode}", "--mode", mode, cwd=root)  # fmt: skip
        assert result.returncode == 0, result.stderr
        out = pd.read_csv(root / "s.csv")
        files = [p for p in (root / f"tree_{mode}").rglob("*.jpg")]
        assert len(files) == len(out)
        row = out.iloc[0]
        placed = root / f"tree_{mode}" / row["split"] / row["label"] / row["path"].split("/")[-1]
        assert placed.read_bytes() == (root / row["path"]).read_bytes()
        assert placed.is_symlink() == (mode == "symlink")
    assert digest(root / "faces") == before


def test_split_dataset_refuses_to_overwrite_its_input_or_a_foreign_folder(images_manifest):
    root = images_manifest
    original = (root / "labels.csv").read_bytes()
    result = run_split("--manifest", "labels.csv", "--out", "labels.csv", cwd=root)
    assert result.returncode == 2 and "--force" in result.stderr
    assert (root / "labels.csv").read_bytes() == original
    (root / "mine").mkdir()
    (root / "mine" / "notes.txt").write_text("keep me")
    result = run_split("--manifest", "labels.csv", "--materialize", "mine", cwd=root)
    assert result.returncode == 2 and "not empty" in result.stderr
    assert (root / "mine" / "notes.txt").read_text() == "keep me"
    assert "Traceback" not in result.stderr


def test_a_multi_label_manifest_of_unique_attribute_combinations_still_splits():
    frame = pd.DataFrame({"path": [f"{i}.jpg" for i in range(300)],
                          "label": [f"Smiling|Attr{i}" for i in range(300)],
                          "group": [f"p{i // 3}" for i in range(300)]})  # fmt: skip
    split = split_frame(frame, seed=0)
    shares = split.value_counts(normalize=True)
    assert abs(shares["train"] - 0.7) < 0.05 and abs(shares["test"] - 0.15) < 0.05
    assert frame.assign(split=split).groupby("group")["split"].nunique().max() == 1
