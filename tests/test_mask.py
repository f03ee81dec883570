"""Task mask on a folder-per-class tree: odd files, the shuffle split, a run, the notebook."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from facelab.config import Experiment
from facelab.data.folders import read_folders
from facelab.data.images import IMAGE_EXTENSIONS
from facelab.data.pipeline import encode_labels, make_dataset
from facelab.data.skipped import SkipLog
from facelab.tasks import get_task
from facelab.train import run_experiment
from tests.conftest import REPO, shared_data
from tests.test_groups import grainy_face, tiny_face

MASK = get_task("mask")


def encoded(image: np.ndarray, ext: str) -> bytes:
    return cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


@pytest.fixture(scope="module")
def odd_tree(tmp_path_factory):
    """A with_mask/without_mask tree in the real folder's odd formats, plus two broken files."""
    root = tmp_path_factory.mktemp("masks")
    rng = np.random.default_rng(1)
    face = tiny_face(True, rng)
    rgba = np.dstack([face, np.full(face.shape[:2], 128, np.uint8)])
    files = {
        "with_mask/upper case.JPEG": encoded(face, ".jpg"),
        "with_mask/upper.JPG": encoded(face, ".jpg"),
        "with_mask/black3.jpg_1088Wx1632H": encoded(face, ".webp"),  # WEBP under an odd name
        "with_mask/alpha.png": cv2.imencode(".png", rgba)[1].tobytes(),
        "with_mask/png inside.jpg": encoded(face, ".png"),
        "with_mask/0_0_≈˙◊¢ 2020.png": encoded(face, ".png"),
        "with_mask/truncated.jpg": encoded(face, ".jpg")[:60],
        "without_mask/plain.jpg": encoded(tiny_face(False, rng), ".jpg"),
        "without_mask/empty.png": b"",
        "without_mask/notes.txt": b"not an image",
        "without_mask/.hidden.jpg": encoded(face, ".jpg"),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_odd_files_load_or_are_skipped_with_a_reason(odd_tree):
    frame = read_folders(odd_tree, MASK)
    names = sorted(p.rsplit("/", 1)[1] for p in frame["path"])
    assert "notes.txt" not in names and ".hidden.jpg" not in names
    assert len(names) == 9
    log = SkipLog()
    exp = Experiment(task="mask", image_size=16, batch_size=4, cache="none")
    ds = make_dataset(list(frame["path"]), encode_labels(frame["label"], MASK), exp, MASK,
                      training=False, skip_log=log)  # fmt: skip
    with pytest.warns(UserWarning, match="skipped"):
        loaded = sum(len(x) for x, _ in ds)
    assert loaded == 7
    reasons = {Path(file).name: reason for file, reason in log.rows}
    assert reasons.keys() == {"truncated.jpg", "empty.png"}
    assert "empty file" in reasons["empty.png"]


def test_every_real_mask_file_loads_through_the_pipeline():
    root = shared_data("masks")
    frame = read_folders(root, MASK)
    assert frame["label"].value_counts().to_dict() == {"with_mask": 700, "without_mask": 700}
    # The odd ones: upper-case or unknown extensions, bytes that are not what the name says,
    # non-ASCII names, and every PNG (some with alpha).
    odd = frame[[_is_odd(p) for p in frame["path"]]]
    assert len(odd) >= 70 and odd["path"].str.endswith("black3.jpg_1088Wx1632H").any()
    log = SkipLog()
    exp = Experiment(task="mask", image_size=32, batch_size=32, cache="none")
    ds = make_dataset(list(odd["path"]), encode_labels(odd["label"], MASK), exp, MASK,
                      training=False, skip_log=log)  # fmt: skip
    assert sum(len(x) for x, _ in ds) == len(odd)
    assert len(log) == 0, log.frame().to_string()


def _is_odd(path: str) -> bool:
    name = path.rsplit("/", 1)[1]
    ext = "." + name.rsplit(".", 1)[-1]
    head = open(path, "rb").read(4)
    kind = ".png" if head == b"\x89PNG" else ".jpg" if head[:3] == b"\xff\xd8\xff" else "?"
    return (
        kind == ".png"
        or ext not in IMAGE_EXTENSIONS
        or ext.lower() != ext
        or kind != {".jpeg": ".jpg"}.get(ext, ext)
        or not name.isascii()
    )


def cli(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facelab", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2",
                                                       "PATH": "/usr/bin:/bin"})  # fmt: skip


def test_split_shuffle_ignores_groups_and_keeps_class_shares(tmp_path):
    rows = [(f"{i}.jpg", ("with_mask", "without_mask")[i % 2], f"g{i % 3}") for i in range(100)]
    pd.DataFrame(rows, columns=["path", "label", "group"]).to_csv(tmp_path / "m.csv", index=False)
    result = cli("split", "--manifest", "m.csv", "--out", "s.csv", "--split", "shuffle",
                 "--ratios", "0.9", "0.1", "--seed", "7", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    split = pd.read_csv(tmp_path / "s.csv")
    test = pd.crosstab(split["split"], split["label"]).loc["test"]
    assert test.between(4, 6).all() and test.sum() == 10
    assert (split.groupby("group")["split"].nunique() == 2).all(), "groups were kept together"
    cli("split", "--manifest", "m.csv", "--out", "s2.csv", "--split", "shuffle", "--ratios",
        "0.9", "0.1", "--seed", "7", cwd=tmp_path)  # fmt: skip
    assert pd.read_csv(tmp_path / "s2.csv").equals(split), "same seed, same split"
    grouped = cli("split", "--manifest", "m.csv", "--out", "s3.csv", "--ratios", "0.9", "0.1",
                  cwd=tmp_path)  # fmt: skip
    assert pd.read_csv(tmp_path / "s3.csv").groupby("group")["split"].nunique().eq(1).all()
    assert grouped.returncode == 0


@pytest.fixture(scope="module")
def face_tree(tmp_path_factory):
    """60 tiny grainy faces per class in a with_mask/without_mask tree."""
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(2)
    for label in ("with_mask", "without_mask"):
        (root / label).mkdir()
        for i in range(60):
            face = grainy_face(label == "with_mask", rng)
            cv2.imwrite(str(root / label / f"{i}.jpg"), face)
    return root


def test_mask_is_learned_from_a_folder_tree_labelled_and_split_on_the_command_line(
    face_tree, tmp_path
):
    steps = [
        ("label", "--task", "mask", "--folders", str(face_tree), "--out", "faces.csv"),
        ("split", "--manifest", "faces.csv", "--out", "split.csv", "--split", "shuffle",
         "--ratios", "0.8", "0.1", "0.1"),
    ]  # fmt: skip
    for step in steps:
        result = cli(*step, cwd=tmp_path)
        assert result.returncode == 0, f"{step[0]}: {result.stderr[-2000:]}"
    exp = Experiment(task="mask", run="t", manifest=str(tmp_path / "split.csv"),
                     output_dir=str(tmp_path), image_size=32, batch_size=16, epochs=4,
                     optimizer="adam", lr=3e-3, augment=True, dense_dropout=0.3)  # fmt: skip
    card = run_experiment(exp, verbose=0)
    assert card["metrics"]["test"]["n"] == 12
    assert card["metrics"]["test"]["accuracy"] >= 0.9
    preds = pd.read_csv(tmp_path / "predictions" / "mask_fromscratch_t.csv")
    assert {"p_with_mask", "p_without_mask"} <= set(preds.columns)


def test_the_inceptionresnetv2_notebook_runs_headless(face_tree, tmp_path):
    # InceptionResNetV2 itself takes minutes to trace on 2 CPU cores: the notebook's MODEL knob
    # runs the same cells with FromScratch here (transfer models, frozen bases and phase 2 are
    # tested on their own and through the transfer notebooks).
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "run.ipynb"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "mask_InceptionResNetV2.ipynb"),
        str(out),
        parameters=dict(MASKS_DIR=str(face_tree), GROUPS_DIR=str(tmp_path / "groups"),
                        OUTPUT_DIR=str(tmp_path), PHOTOS={"train": 24, "val": 6, "test": 6},
                        PHOTO_SIZE=48, MODEL="fromscratch", IMAGE_SIZE=32, WEIGHTS=None, EPOCHS=1,
                        FINE_TUNE_EPOCHS=0, BATCH_SIZE=8),
        kernel_name="python3", cwd=str(REPO / "notebooks"), progress_bar=False,
    )  # fmt: skip
    stem = "mask_count_fromscratch_notebook"
    assert (tmp_path / "models" / f"{stem}.keras").is_file()
    assert (tmp_path / "plots" / f"{stem}_confusion.png").is_file()
    assert len(pd.read_csv(tmp_path / "groups" / "manifest.csv")) == 36
