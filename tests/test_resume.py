"""A run killed mid-way resumes where it stopped; parallel runs both land their results rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pandas as pd
import pytest

from facelab.models.scratch import build_fromscratch
from tests.conftest import REPO
from tests.test_train import lit_face

ENV = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(1)
    (root / "img").mkdir()
    rows = []
    for i in range(600):
        label = ("left", "center", "right")[i % 3]
        cv2.imwrite(str(root / f"img/{i:04d}.png"), lit_face(label, rng))
        rows.append((f"img/{i:04d}.png", label, ("train", "train", "train", "val", "test")[i % 5]))
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(root / "m.csv", index=False)
    return str(root / "m.csv")


def train_command(manifest: str, run: str, epochs: int = 5) -> list[str]:
    return [sys.executable, "-m", "facelab", "train", "--task", "light", "--manifest", manifest,
            "--run", run, "--epochs", str(epochs), "--image-size", "32", "--batch-size", "8",
            "--optimizer", "adam", "--lr", "0.002"]  # fmt: skip


def wait_for(predicate, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.05)


def history_rows(path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def backed_up_epochs(backup) -> int:
    """Epochs finished according to Keras' BackupAndRestore (written after the weights)."""
    try:
        return int(json.loads((backup / "training_metadata.json").read_text())["epoch"])
    except (FileNotFoundError, ValueError, KeyError):  # not there yet, or being written
        return 0


def resume_in_process(command: list[str], capsys) -> str:
    """Re-run a killed command through the same entry point in this process (one TensorFlow
    start-up less than a second subprocess); returns what it printed."""
    from facelab.__main__ import main

    capsys.readouterr()
    code = main(command[3:])  # without "python -m facelab"
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    return out


def test_training_killed_after_epoch_2_resumes_at_epoch_3(manifest, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "models" / ".light_fromscratch_k.work"
    process = subprocess.Popen(train_command(manifest, "k"), cwd=tmp_path, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    # Kill only once epoch 2 is both in the history and in the backup: on a slow machine a
    # kill between the two would (correctly) redo epoch 2, which is not what this test checks.
    wait_for(
        lambda: history_rows(work / "history.csv") >= 2 and backed_up_epochs(work / "backup") >= 2,
        process,
    )
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = backed_up_epochs(work / "backup")  # 2, or 3 on a machine fast enough to finish one more
    assert 2 <= done < 5
    assert not (tmp_path / "models" / "light_fromscratch_k.keras").exists()
    rerun = resume_in_process(train_command(manifest, "k"), capsys)
    assert "resuming" in rerun
    assert f"Epoch {done + 1}/5" in rerun
    assert not any(f"Epoch {e}/5" in rerun for e in range(1, done + 1))
    card = json.loads((tmp_path / "models/light_fromscratch_k.json").read_text())
    assert card["epochs_run"] == 5
    saved = pd.read_csv(tmp_path / "models/light_fromscratch_k_history.csv")
    assert list(saved["epoch"]) == [0, 1, 2, 3, 4]
    outputs = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert outputs == {
        f"models/light_fromscratch_k{suffix}"
        for suffix in (".keras", ".h5", ".json", "_history.csv")
    } | {"models/results.csv", "models/results.csv.lock", "predictions/light_fromscratch_k.csv"} | {
        f"plots/light_fromscratch_k_{kind}.png" for kind in ("history", "confusion", "samples")
    }


def test_prediction_killed_mid_way_resumes_without_redoing_rows(manifest, tmp_path, capsys):
    model = tmp_path / "light.keras"  # an untrained model predicts just as slowly
    build_fromscratch((32, 32, 3), 3).save(model)
    folder = os.path.join(os.path.dirname(manifest), "img")
    out = tmp_path / "all.csv"
    partial = tmp_path / "all.csv.partial"
    command = [sys.executable, "-m", "facelab", "predict", str(model), folder, "--out", str(out),
               "--batch-size", "4", "--task", "light"]  # fmt: skip
    process = subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for(lambda: history_rows(partial) >= 40, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()
    done_before = history_rows(partial)
    assert 40 <= done_before < 600
    assert "resuming" in resume_in_process([*command, "--resume"], capsys)
    rows = pd.read_csv(out)
    assert len(rows) == 600 and rows["path"].is_unique
    assert not partial.exists()


def test_two_runs_in_parallel_both_land_their_results_row(manifest, tmp_path):
    small = tmp_path / "small.csv"  # 60 of the images: the runs overlap all the same
    frame = pd.read_csv(manifest).head(60)
    frame["path"] = [os.path.join(os.path.dirname(manifest), p) for p in frame["path"]]
    frame.to_csv(small, index=False)
    runs = [subprocess.Popen(train_command(str(small), name, epochs=1), cwd=tmp_path, env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for name in ("a", "b")]  # fmt: skip
    for process in runs:
        assert process.wait(timeout=600) == 0, process.stderr.read()[-2000:]
    results = pd.read_csv(tmp_path / "models/results.csv")
    assert sorted(results["stem"]) == ["light_fromscratch_a", "light_fromscratch_b"]
