"""LFW pairs files -> pairs frames, person-disjoint splits, balanced pairs and the pair pipeline."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.config import Experiment
from facelab.data.lfw import (
    pair_images,
    pair_people,
    read_lfw_pairs,
    read_pairs_file,
)
from facelab.data.pairs import (
    ImageBank,
    make_pair_dataset,
    person_ids,
    sample_pairs,
    verification_splits,
)
from tests.conftest import shared_data

SIDE = 48  # generated image side in pixels (real LFW images are 250)


def person_face(person: int, image: int, side: int = SIDE) -> np.ndarray:
    """A grey 'face': a smooth pattern fixed per person, with a little shift and noise per image."""
    pattern = np.random.default_rng(1000 + person).normal(0, 1, (4, 4))
    face = cv2.resize(pattern, (side, side), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(person * 100 + image)
    face = np.roll(face, tuple(rng.integers(-1, 2, size=2)), axis=(0, 1))
    grey = 128 + 50 * face / (np.abs(face).max() + 1e-6) + rng.normal(0, 6, face.shape)
    return np.clip(grey, 0, 255).astype(np.uint8)


def make_lfw(root: Path, train_people: int = 14, test_people: int = 6, images: int = 3,
             n_train: int = 10, n_test: int = 6) -> Path:  # fmt: skip
    """A tiny LFW folder: ``root/lfw/<Name>/<Name>_<NNNN>.jpg`` and pairsDevTrain/Test.txt."""
    names = [f"Person_{chr(65 + k // 26)}{chr(65 + k % 26)}" for k in range(train_people + test_people)]  # fmt: skip
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
        for _ in range(n):
            a, b = rng.choice(len(people), 2, replace=False)
            i, j = rng.integers(1, images + 1, size=2)
            lines.append(f"{people[a]}\t{i}\t{people[b]}\t{j}")
        (root / file).write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def lfw(tmp_path_factory) -> Path:
    return make_lfw(tmp_path_factory.mktemp("lfw"))


def tiny(**changes) -> Experiment:
    values = dict(task="verification", image_size=24, batch_size=4, seed=3, augment=True)
    values.update(changes)
    return Experiment(**values)


def test_reader_parses_matched_and_mismatched_lines_with_their_line_numbers(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("2\nAna\t1\t3\nBo_Li\t2\t4\nAna\t1\tBo_Li\t2\nCy\t1\tAna\t2\n")
    frame = read_pairs_file(path)
    assert frame["same"].tolist() == [1, 1, 0, 0]
    assert frame.iloc[0][["person_a", "image_a", "person_b", "image_b"]].tolist() == [
        "Ana",
        1,
        "Ana",
        3,
    ]
    assert frame.iloc[3][["person_a", "image_a", "person_b", "image_b"]].tolist() == [
        "Cy",
        1,
        "Ana",
        2,
    ]
    assert frame["line"].tolist() == [2, 3, 4, 5]


def test_reader_reads_the_ten_fold_pairs_file_with_a_fold_column(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("2\t1\nA\t1\t2\nA\t1\tB\t1\nC\t1\t2\nC\t2\tA\t1\n")
    frame = read_pairs_file(path)
    assert frame["fold"].tolist() == [0, 0, 1, 1]
    assert frame["same"].tolist() == [1, 0, 1, 0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("x\nA\t1\t2\n", "line 1: expected the count line"),
        ("1\nA\t1\t2\nA\t1\tB\t1\t2\n", "line 3: expected 'name i j'"),
        ("1\nA\t1\t2\nA\t0\tB\t1\n", "line 3: image number '0'"),
        ("2\nA\t1\t2\nA\t1\tB\t1\n", "promises 4 pairs"),
        ("1\nA\t1\tB\t1\nA\t1\t2\n", "the order is off"),
    ],
)
def test_a_malformed_pairs_file_names_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "pairsDevTrain.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        read_pairs_file(path)
    assert str(path) in str(err.value)


def test_pairs_get_the_lfw_image_paths(lfw):
    frame = read_lfw_pairs(lfw, "train")
    row = frame.iloc[0]
    assert (
        Path(row["path_a"])
        == lfw / "lfw" / row["person_a"] / f"{row['person_a']}_{row['image_a']:04d}.jpg"
    )
    assert len(frame) == 20 and frame["same"].sum() == 10


def test_a_pair_whose_image_is_missing_is_a_clear_error(lfw, tmp_path):
    copy = tmp_path / "pairsDevTest.txt"
    lines = (lfw / "pairsDevTest.txt").read_text().splitlines()
    lines[1] = lines[1].split("\t")[0] + "\t1\t9"  # image 9 does not exist
    copy.write_text("\n".join(lines) + "\n")
    with pytest.raises(FileNotFoundError, match=r"line 2: .*_0009\.jpg") as err:
        read_lfw_pairs(lfw, pairs_file=copy)
    assert str(copy) in str(err.value) and "1 image(s)" in str(err.value)


def test_a_missing_pairs_file_says_what_to_pass(tmp_path):
    (tmp_path / "lfw").mkdir()
    with pytest.raises(FileNotFoundError, match="pairsDevTrain.txt"):
        read_lfw_pairs(tmp_path, "train")


def test_sampled_pairs_are_balanced_and_deterministic(lfw):
    images = pair_images(read_lfw_pairs(lfw, "train"))
    first = sample_pairs(images, 31, seed=5)
    assert first.equals(sample_pairs(images, 31, seed=5))
    assert not first.equals(sample_pairs(images, 31, seed=6))
    assert first["same"].sum() == 15 and len(first) == 31
    matched = first[first["same"] == 1]
    assert (matched["person_a"] == matched["person_b"]).all()
    assert (matched["path_a"] != matched["path_b"]).all()
    mismatched = first[first["same"] == 0]
    assert (mismatched["person_a"] != mismatched["person_b"]).all()
    assert set(first["path_a"]) | set(first["path_b"]) <= set(images["path"])


def test_no_person_is_in_two_of_train_validation_and_test(lfw):
    splits = verification_splits(
        read_lfw_pairs(lfw, "train"), read_lfw_pairs(lfw, "test"), 0.25, 40, 12, seed=1
    )
    people = {name: pair_people(frame) for name, frame in splits.items()}
    assert people["train"] and people["val"] and people["test"]
    assert not people["train"] & people["val"]
    assert not people["train"] & people["test"]
    assert not people["val"] & people["test"]
    assert len(splits["train"]) == 40 and len(splits["val"]) == 12
    for name in ("train", "val"):
        assert 0.35 <= splits[name]["same"].mean() <= 0.65, name
    assert (splits["train"]["split"] == "train").all()
    assert splits["test"]["source"].eq("official").all() and len(splits["test"]) == 12


def test_splits_are_deterministic_from_the_seed(lfw):
    train, test = read_lfw_pairs(lfw, "train"), read_lfw_pairs(lfw, "test")
    one = verification_splits(train, test, 0.25, 40, 12, seed=1)
    two = verification_splits(train, test, 0.25, 40, 12, seed=1)
    other = verification_splits(train, test, 0.25, 40, 12, seed=2)
    assert all(one[k].equals(two[k]) for k in one)
    assert pair_people(one["val"]) != pair_people(other["val"])


def test_test_people_found_in_the_training_pairs_are_kept_out_of_training(lfw):
    train, test = read_lfw_pairs(lfw, "train"), read_lfw_pairs(lfw, "test")
    shared = test["person_a"].iloc[0]
    leaking = train.copy()
    leaking.loc[0, ["person_a", "person_b", "path_a", "path_b"]] = [
        shared, shared, test["path_a"].iloc[0], test["path_b"].iloc[0],
    ]  # fmt: skip
    splits = verification_splits(leaking, test, 0.25, 40, 12, seed=1)
    assert shared not in pair_people(splits["train"]) | pair_people(splits["val"])


def test_pair_pipeline_batches_both_images_and_the_target(lfw):
    pairs = read_lfw_pairs(lfw, "train")
    bank = ImageBank(pair_images(pairs)["path"], 24)
    assert bank.images.shape == (len(pair_images(pairs)), 24, 24, 3)
    (a, b), same = next(iter(make_pair_dataset(pairs, bank, tiny(), training=True)))
    assert a.shape == b.shape == (4, 24, 24, 3) and a.dtype.name == "float32"
    assert same.shape == (4,) and set(same.numpy()) <= {0.0, 1.0}
    (_, _), ids = next(iter(make_pair_dataset(pairs, bank, tiny(), training=False, target="ids")))
    assert ids.shape == (4, 2)
    expected = person_ids(pairs)[:4]
    np.testing.assert_array_equal(ids.numpy(), expected)
    total = sum(int(s.shape[0]) for _, s in make_pair_dataset(pairs, bank, tiny(), training=False))
    assert total == len(pairs)


def test_evaluation_batches_are_the_decoded_images_in_pair_order(lfw):
    pairs = read_lfw_pairs(lfw, "test")
    bank = ImageBank(pair_images(pairs)["path"], 24)
    (a, b), same = next(iter(make_pair_dataset(pairs, bank, tiny(), training=False)))
    np.testing.assert_array_equal(a.numpy()[0], bank.images[bank.index[pairs["path_a"][0]]])
    np.testing.assert_array_equal(b.numpy()[1], bank.images[bank.index[pairs["path_b"][1]]])
    assert same.numpy().tolist() == pairs["same"][:4].astype(float).tolist()


def test_augmentation_changes_the_two_images_independently_and_repeats_with_the_seed(lfw):
    pairs = read_lfw_pairs(lfw, "train").iloc[:4]
    pairs = pairs.assign(path_b=pairs["path_a"])  # the same image on both sides
    bank = ImageBank(pair_images(pairs)["path"], 24)
    exp = tiny()

    def first_batch():
        ds = make_pair_dataset(pairs, bank, exp, training=True, shuffle=False)
        (a, b), _ = next(iter(ds))
        return a.numpy(), b.numpy()

    a, b = first_batch()
    assert not np.allclose(a, b), "a and b got the same augmentation"
    a2, b2 = first_batch()
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)


def test_pairs_with_an_unreadable_image_are_dropped_and_logged(lfw, tmp_path):
    pairs = read_lfw_pairs(lfw, "test")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    pairs.loc[0, "path_a"] = str(broken)
    with pytest.warns(UserWarning, match="broken.jpg"):
        bank = ImageBank(pair_images(pairs)["path"], 24)
    assert len(bank.usable(pairs)) == len(pairs) - 1
    assert len(bank.skip_log) == 1


def test_the_real_lfw_development_pairs_read_as_documented():
    folder = shared_data("lfw-pairs")
    train, test = read_lfw_pairs(folder, "train"), read_lfw_pairs(folder, "test")
    assert (len(train), int(train["same"].sum())) == (2200, 1100)
    assert (len(test), int(test["same"].sum())) == (1000, 500)
    assert not pair_people(train) & pair_people(test)
    assert len(pair_images(train)) + len(pair_images(test)) == 4992
    assert len(pair_people(train) | pair_people(test)) == 3095
