"""The CelebA path on real photos: a slice of ../shared/data/celeba-half through label, split
and train (skipped when the folder is absent)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from facelab.__main__ import main
from facelab.data.manifest import read_manifest
from tests.conftest import REPO, shared_data

SLICE = 400  # images: the first ones of the folder, with every annotation file cut to match


@pytest.fixture(scope="module")
def celeba_slice(tmp_path_factory):
    """A CelebA root of the first images of celeba-half, in the real formats (a copy in tmp)."""
    source = shared_data("celeba-half")
    root = tmp_path_factory.mktemp("celeba_slice")
    (root / "img_align_celeba").mkdir()
    names = sorted(p.name for p in (source / "img_align_celeba").glob("*.jpg"))[:SLICE]
    for name in names:
        shutil.copy(source / "img_align_celeba" / name, root / "img_align_celeba" / name)
    keep = set(names)
    for file, header_lines in (("list_attr_celeba.txt", 2), ("list_landmarks_align_celeba.txt", 2),
                               ("identity_CelebA.txt", 0)):  # fmt: skip
        lines = (source / file).read_text().splitlines()
        rows = [line for line in lines[header_lines:] if line.split()[0] in keep]
        head = [str(len(rows)), lines[1]] if header_lines else []
        (root / file).write_text("\n".join(head + rows) + "\n")
    return root


def test_real_faces_label_split_and_train_for_gender_identity_disjoint(celeba_slice, tmp_path,
                                                                       monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert main(["label", "--task", "gender", "--celeba", str(celeba_slice),
                 "--out", "gender.csv"]) == 0  # fmt: skip
    assert main(["split", "--manifest", "gender.csv", "--out", "gender_split.csv"]) == 0
    frame = read_manifest("gender_split.csv")
    assert len(frame) == SLICE
    assert frame.groupby("group")["split"].nunique().max() == 1  # no identity in two splits
    assert main(["train", "--task", "gender", "--manifest", "gender_split.csv", "--run", "real",
                 "--epochs", "1", "--image-size", "32", "--batch-size", "32",
                 "--optimizer", "adam", "--lr", "0.001"]) == 0  # fmt: skip
    card = json.loads((tmp_path / "models/gender_fromscratch_real.json").read_text())
    assert card["metrics"]["test"]["n"] == (frame["split"] == "test").sum()
    assert card["inference"]["batch_32"]["images_per_s"] > 0


def test_real_attributes_subset_trains_with_per_attribute_metrics(celeba_slice, tmp_path,
                                                                  monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert main(["label", "--task", "attributes", "--celeba", str(celeba_slice),
                 "--out", "attributes.csv"]) == 0  # fmt: skip
    assert main(["split", "--manifest", "attributes.csv", "--out", "split.csv",
                 "--split", "shuffle"]) == 0  # fmt: skip
    assert main(["train", "--task", "attributes", "--attributes", "Smiling", "Eyeglasses", "Male",
                 "--class-weight", "balanced", "--manifest", "split.csv", "--run", "real",
                 "--epochs", "1", "--image-size", "32", "--batch-size", "32",
                 "--optimizer", "adam", "--lr", "0.001"]) == 0  # fmt: skip
    card = json.loads((tmp_path / "models/attributes_fromscratch_real.json").read_text())
    per = card["metrics"]["test"]["per_attribute"]
    assert list(per) == ["Smiling", "Eyeglasses", "Male"]
    truth = pd.read_csv("split.csv")
    test = truth[truth["split"] == "test"]
    smiling = test["label"].fillna("").str.split("|").apply(lambda names: "Smiling" in names)
    assert per["Smiling"]["positive_rate"] == pytest.approx(smiling.mean())


def test_real_landmarks_give_orientation_labels_for_most_faces(celeba_slice, tmp_path):
    out = tmp_path / "orientation.csv"
    assert main(["label", "--task", "orientation", "--celeba", str(celeba_slice),
                 "--out", str(out), "--plot", str(tmp_path / "grid.png")]) == 0  # fmt: skip
    frame = pd.read_csv(out)
    landmarked = (
        len((celeba_slice / "list_landmarks_align_celeba.txt").read_text().splitlines()) - 2
    )
    assert len(frame) / landmarked >= 0.7
    assert set(frame["label"]) == {"left", "center", "right"}


def test_the_benchmark_script_skips_cleanly_without_the_data(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(REPO / "benchmarks/celeba_real.py"), "--celeba",
                           str(tmp_path / "absent")], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and '"skipped"' in done.stdout
