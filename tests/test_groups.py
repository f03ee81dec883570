"""The group-photo composer: known mask counts, split-disjoint faces, determinism, odd inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from facelab.data.groups import (
    BACKGROUNDS,
    compose_groups,
    compose_photo,
    count_class,
    make_background,
)
from facelab.data.manifest import read_manifest
from facelab.data.skipped import SkipLog
from facelab.tasks import get_task
from tests.conftest import REPO

SIZE = 64


def tiny_face(masked: bool, rng: np.random.Generator) -> np.ndarray:
    """A 40x32 'face': skin-coloured oval, a white mask over its lower half when ``masked``."""
    face = np.full((40, 32, 3), rng.integers(150, 230, 3), np.uint8)
    cv2.ellipse(face, (16, 20), (12, 17), 0, 0, 360, (200, 160, 130), -1)
    if masked:
        face[22:36, 5:27] = (235, 235, 240)
    return face


def grainy_face(masked: bool, rng: np.random.Generator) -> np.ndarray:
    """``tiny_face`` with its own grain: without it, one class's faces differ only in colour, which
    makes them near-duplicates to the notebooks' split."""
    face = tiny_face(masked, rng) + rng.normal(0, 20, (40, 32, 3))
    return np.clip(face, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> pd.DataFrame:
    """12 masked and 12 unmasked grainy faces per split, written as PNG files."""
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    rows = []
    for split in ("train", "val", "test"):
        for label in ("with_mask", "without_mask"):
            (root / label).mkdir(exist_ok=True)
            for i in range(12):
                path = root / label / f"{split}_{i}.png"
                cv2.imwrite(str(path), grainy_face(label == "with_mask", rng))
                rows.append((str(path), label, split))
    return pd.DataFrame(rows, columns=["path", "label", "split"])


def test_the_count_class_says_none_all_or_some():
    assert count_class(0, 3) == "none"
    assert count_class(4, 0) == "all"
    assert count_class(1, 2) == "some"
    with pytest.raises(ValueError, match="at least one face"):
        count_class(0, 0)


def test_photos_are_written_with_a_manifest_of_their_counts(faces, tmp_path):
    manifest = compose_groups(faces, tmp_path / "groups", {"train": 30, "test": 9}, size=SIZE)
    on_disk = read_manifest(tmp_path / "groups" / "manifest.csv", get_task("mask_count"))
    assert list(on_disk.columns[:7]) == ["path", "label", "split", "group", "n_faces",
                                         "n_masked", "n_unmasked"]  # fmt: skip
    assert on_disk["path"].tolist() == manifest["path"].tolist()
    assert manifest["split"].value_counts().to_dict() == {"train": 30, "test": 9}
    assert manifest["label"].value_counts().to_dict() == {"none": 13, "all": 13, "some": 13}
    assert manifest["n_faces"].between(2, 5).all()
    assert (manifest["n_masked"] + manifest["n_unmasked"] == manifest["n_faces"]).all()
    counts = manifest[["n_masked", "n_unmasked"]].itertuples(index=False)
    expected = [count_class(masked, unmasked) for masked, unmasked in counts]
    assert manifest["label"].tolist() == expected
    masked_faces = manifest["faces"].str.split("|").map(lambda f: sum("with_mask" in p for p in f))
    assert (masked_faces == manifest["n_masked"]).all()
    for path in manifest["path"]:
        assert cv2.imread(path).shape == (SIZE, SIZE, 3)


def test_faces_of_one_split_never_appear_in_another_splits_photos(faces, tmp_path):
    manifest = compose_groups(faces, tmp_path, {"train": 40, "val": 10, "test": 10}, size=SIZE)
    split_of = dict(zip(faces["path"], faces["split"], strict=True))
    for split, used in zip(manifest["split"], manifest["faces"].str.split("|"), strict=True):
        assert {split_of[p] for p in used} == {split}
        assert len(set(used)) == len(used), "a face twice in one photo"
    assert manifest.groupby("split")["group"].nunique().eq(1).all()


def test_the_same_seed_gives_the_same_photos_and_another_seed_others(faces, tmp_path):
    first = compose_groups(faces, tmp_path / "a", {"train": 6}, seed=3, size=SIZE)
    again = compose_groups(faces, tmp_path / "b", {"train": 6}, seed=3, size=SIZE)
    other = compose_groups(faces, tmp_path / "c", {"train": 6}, seed=4, size=SIZE)
    assert first.drop(columns="path").equals(again.drop(columns="path"))
    for a, b in zip(first["path"], again["path"], strict=True):
        assert open(a, "rb").read() == open(b, "rb").read()
    assert not all(
        np.array_equal(cv2.imread(a), cv2.imread(c))
        for a, c in zip(first["path"], other["path"], strict=True)
    )


def test_more_train_photos_leave_the_test_photos_unchanged(faces, tmp_path):
    small = compose_groups(faces, tmp_path / "a", {"train": 3, "test": 4}, seed=1, size=SIZE)
    large = compose_groups(faces, tmp_path / "b", {"train": 12, "test": 4}, seed=1, size=SIZE)
    test = lambda m: m.loc[m["split"] == "test", ["label", "faces"]].reset_index(drop=True)  # noqa: E731
    assert test(small).equals(test(large))


def test_training_photos_may_show_single_faces_while_the_others_keep_their_range(faces, tmp_path):
    counts = {"train": 60, "val": 9, "test": 9}
    manifest = compose_groups(faces, tmp_path / "a", counts, seed=2, size=SIZE,
                              train_faces_per_photo=(1, 5))  # fmt: skip
    train = manifest[manifest["split"] == "train"]
    assert train["n_faces"].between(1, 5).all() and (train["n_faces"] == 1).any()
    assert set(train.loc[train["n_faces"] == 1, "label"]) <= {"none", "all"}
    assert manifest.loc[manifest["split"] != "train", "n_faces"].between(2, 5).all()
    plain = compose_groups(faces, tmp_path / "b", counts, seed=2, size=SIZE)
    held_out = lambda m: m.loc[m["split"] != "train", ["label", "faces"]].reset_index(drop=True)  # noqa: E731
    assert held_out(manifest).equals(held_out(plain))
    with pytest.raises(ValueError, match=r"train_faces_per_photo \(1, 1\)"):
        compose_groups(faces, tmp_path / "c", counts, size=SIZE, train_faces_per_photo=(1, 1))


def test_faces_are_pasted_into_separate_non_overlapping_places():
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (200, 40, 200)]
    solid = [np.full((30, 20, 3), c, np.uint8) for c in colours]
    for seed in range(20):
        photo = compose_photo(solid, SIZE, np.random.default_rng(seed), max_rotation=0, jitter=0)
        for colour in colours:
            exact = np.all(photo == colour, axis=-1).astype(np.uint8)
            _, _, stats, _ = cv2.connectedComponentsWithStats(exact, connectivity=4)
            x, y, w, h, area = stats[1:][np.argmax(stats[1:, 4])]  # the largest patch of it
            assert area >= 50, f"seed {seed}: face {colour} missing or covered"
            # Unrotated, each face is a solid rectangle that no other face cuts into.
            assert area / (w * h) > 0.99, f"seed {seed}: face {colour} overlapped"


def test_each_background_kind_is_a_varied_rgb_image():
    for kind in BACKGROUNDS:
        image = make_background(SIZE, np.random.default_rng(0), kind)
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        assert image.std() > 3, f"{kind} background is flat"
    with pytest.raises(ValueError, match="choose one of"):
        make_background(SIZE, np.random.default_rng(0), "beach")


def test_an_unreadable_face_is_skipped_with_its_reason(faces, tmp_path):
    broken = tmp_path / "src" / "broken.jpg"
    broken.parent.mkdir()
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with_broken = pd.concat(
        [faces, pd.DataFrame([(str(broken), "with_mask", "train")], columns=faces.columns)]
    )
    log = SkipLog()
    with pytest.warns(UserWarning, match="broken.jpg"):
        manifest = compose_groups(
            with_broken, tmp_path / "g", {"train": 20}, size=SIZE, skip_log=log
        )
    assert log.frame()["file"].tolist() == [str(broken)]
    assert not manifest["faces"].str.contains("broken.jpg").any()
    assert (tmp_path / "g" / "manifest_skipped.csv").is_file()


def test_a_split_lacking_one_class_of_faces_is_refused_with_a_hint(faces, tmp_path):
    only_masked = faces[(faces["split"] == "train") | (faces["label"] == "with_mask")]
    with pytest.raises(ValueError, match="'test' has 0 readable without_mask"):
        compose_groups(only_masked, tmp_path, {"train": 3, "test": 3}, size=SIZE)
    with pytest.raises(ValueError, match="split them first"):
        compose_groups(faces.drop(columns="split"), tmp_path, {"train": 3}, size=SIZE)
    with pytest.raises(ValueError, match="split 'holdout' unknown"):
        compose_groups(faces, tmp_path, {"holdout": 3}, size=SIZE)
    in_two_splits = pd.concat([faces, faces.iloc[:1].assign(split="test")])
    with pytest.raises(ValueError, match="listed more than once"):
        compose_groups(in_two_splits, tmp_path, {"train": 3}, size=SIZE)


def test_the_composer_never_writes_into_a_face_folder_or_a_foreign_folder(faces, tmp_path):
    face_folder = Path(faces["path"].iloc[0]).parent
    with pytest.raises(ValueError, match="inside a folder of source faces"):
        compose_groups(faces, face_folder / "groups", {"train": 3}, size=SIZE)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        compose_groups(faces, tmp_path, {"train": 3}, size=SIZE)


def test_compose_groups_from_the_command_line(faces, tmp_path):
    faces_csv = tmp_path / "faces.csv"
    faces.to_csv(faces_csv, index=False)
    out = tmp_path / "groups"
    result = subprocess.run(
        [sys.executable, "-m", "facelab", "compose-groups", "--faces", str(faces_csv), "--out",
         str(out), "--n", "train=9", "test=3", "--size", str(SIZE), "--seed", "5",
         "--train-faces-per-photo", "1", "3"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote 12 photos" in result.stdout
    manifest = pd.read_csv(out / "manifest.csv")
    assert manifest["split"].value_counts().to_dict() == {"train": 9, "test": 3}
    assert manifest.loc[manifest["split"] == "train", "n_faces"].between(1, 3).all()
    assert not manifest["path"].str.startswith("/").any(), "paths are relative to the manifest"
    bad = subprocess.run(
        [sys.executable, "-m", "facelab", "compose-groups", "--faces", str(faces_csv), "--out",
         str(out), "--n", "train:9"],
        capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert bad.returncode == 2 and "SPLIT=N" in bad.stderr


def test_the_mask_count_notebook_runs_headless(faces, tmp_path):
    papermill = pytest.importorskip("papermill")
    papermill.execute_notebook(
        str(REPO / "notebooks" / "mask_count_FromScratch.ipynb"),
        str(tmp_path / "run.ipynb"),
        parameters=dict(MASKS_DIR=str(Path(faces["path"].iloc[0]).parents[1]),
                        GROUPS_DIR=str(tmp_path / "groups"), OUTPUT_DIR=str(tmp_path),
                        PHOTOS={"train": 24, "val": 6, "test": 6}, PHOTO_SIZE=48, IMAGE_SIZE=32,
                        FILTERS=[8, 16], EPOCHS=1, BATCH_SIZE=8),
        kernel_name="python3", cwd=str(REPO / "notebooks"), progress_bar=False,
    )  # fmt: skip
    stem = "mask_count_fromscratch_notebook"
    card = pd.read_json(tmp_path / "models" / f"{stem}.json", typ="series")
    assert card["metrics"]["test"]["n"] == 6
    assert (tmp_path / "plots" / f"{stem}_confusion.png").is_file()
    assert (tmp_path / "plots" / "mask_count_composed_samples.png").is_file()
