"""A whole run through the real entry points: outputs, re-runs, prediction, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from facelab.config import Experiment
from facelab.train import run_experiment
from tests.conftest import REPO, THREAD_VARIABLES

SIZE = 32


def lit_face(label: str, rng: np.random.Generator) -> np.ndarray:
    """A 48x48 grey 'face' lit from the image's left, right, or evenly (center)."""
    x = np.linspace(-1, 1, 48)[None, :, None]
    slope = {"left": -60.0, "right": 60.0, "center": 0.0}[label]
    image = 120 + slope * x + rng.normal(0, 8, (48, 48, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def light_manifest(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("light")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(240):
        label = ("left", "center", "right")[i % 3]
        name = f"img/{i:03d}.png"
        (root / "img").mkdir(exist_ok=True)
        cv2.imwrite(str(root / name), lit_face(label, rng))
        split = "train" if i < 180 else ("val" if i < 210 else "test")
        rows.append((name, label, split, f"s{i}"))
    pd.DataFrame(rows, columns=["path", "label", "split", "group"]).to_csv(
        root / "m.csv", index=False
    )
    return str(root / "m.csv")


def tiny(manifest: str, out, **changes) -> Experiment:
    """A run in seconds: FromScratch with two small conv blocks (tracing a graph is most of a
    tiny run, and the default five blocks triple it) on 32 px images for two epochs."""
    values = dict(task="light", model="fromscratch", run="t", manifest=manifest, output_dir=str(out),
                  image_size=SIZE, batch_size=16, epochs=2, optimizer="adam", lr=3e-3,
                  extra={"filters": [8, 16]})  # fmt: skip
    values.update(changes)
    return Experiment(**values)


def test_a_run_writes_every_output_named_by_its_stem(light_manifest, tmp_path):
    card = run_experiment(tiny(light_manifest, tmp_path), verbose=0)
    stem = "light_fromscratch_t"
    for rel in (f"models/{stem}.keras", f"models/{stem}.h5", f"models/{stem}.json",
                "models/results.csv", f"plots/{stem}_history.png", f"plots/{stem}_confusion.png",
                f"plots/{stem}_samples.png", f"predictions/{stem}.csv"):  # fmt: skip
        assert (tmp_path / rel).stat().st_size > 0, rel
    saved = json.loads((tmp_path / f"models/{stem}.json").read_text())
    assert saved["experiment"]["lr"] == 3e-3 and saved["epochs_run"] == 2
    assert set(saved["metrics"]) == {"train", "val", "test"}
    assert card["metrics"]["test"]["n"] == 30
    preds = pd.read_csv(tmp_path / f"predictions/{stem}.csv")
    assert list(preds.columns) == ["path", "label", "split", "predicted", "confidence",
                                   "p_left", "p_center", "p_right"]  # fmt: skip
    assert len(preds) == 240
    assert np.allclose(preds[["p_left", "p_center", "p_right"]].sum(axis=1), 100, atol=0.05)
    assert not list((tmp_path / "models").glob(".*work*")), "work folder left behind"


def test_rerunning_a_run_replaces_its_files_and_adds_a_results_row(light_manifest, tmp_path):
    run_experiment(tiny(light_manifest, tmp_path, epochs=1), verbose=0)
    run_experiment(tiny(light_manifest, tmp_path, epochs=2), verbose=0)
    card = json.loads((tmp_path / "models/light_fromscratch_t.json").read_text())
    assert card["epochs_run"] == 2
    assert len(pd.read_csv(tmp_path / "models/results.csv")) == 2


def test_light_from_brightness_is_learned(light_manifest, tmp_path):
    card = run_experiment(
        tiny(light_manifest, tmp_path, epochs=8, run="learn", dense_dropout=0.5), verbose=0
    )
    assert card["metrics"]["test"]["accuracy"] >= 0.9


def cli(*args, cwd) -> subprocess.CompletedProcess:
    threads = {name: os.environ[name] for name in THREAD_VARIABLES}
    return subprocess.run([sys.executable, "-m", "facelab", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2",
                                                       "PATH": "/usr/bin:/bin", **threads})  # fmt: skip


def test_train_and_predict_from_the_command_line(light_manifest, tmp_path, monkeypatch):
    from facelab.__main__ import main  # training in this process: one TensorFlow start-up less

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--task", "light", "--manifest", light_manifest, "--run", "cli",
                 "--epochs", "1", "--image-size", str(SIZE), "--batch-size", "16", "--optimizer",
                 "adabound"]) == 0  # fmt: skip
    model = tmp_path / "models/light_fromscratch_cli.keras"
    images = pd.read_csv(light_manifest)["path"][:5]
    folder = tmp_path / "to_predict"
    folder.mkdir()
    for i, rel in enumerate(images):
        (folder / f"face {i} é.png").write_bytes(
            (REPO / light_manifest).parent.joinpath(rel).read_bytes()
        )
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "out" / "preds.csv"
    result = cli("predict", str(model), str(folder), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    preds = pd.read_csv(out)
    assert len(preds) == 5 and set(preds["predicted"]) <= {"left", "center", "right"}
    skipped = pd.read_csv(out.with_name("preds_skipped.csv"))
    assert skipped["file"].str.endswith("broken.jpg").all()
    assert main(["predict", str(model.with_suffix(".h5")), str(folder), "--out",
                 str(tmp_path / "h5.csv")]) == 0  # fmt: skip
    again = pd.read_csv(tmp_path / "h5.csv")
    assert np.allclose(again["p_left"], preds["p_left"], atol=1e-3)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--task", "light", "--manifest", "nope.csv"], "manifest not found"),
        (
            ["predict", "notamodel.txt", ".", "--out", "x.csv", "--task", "light"],
            "model file not found",
        ),
        (["train", "--task", "light", "--manifest", "m.csv", "--run", "bad name"], "run name"),
    ],
)
def test_input_mistakes_give_one_clear_line_not_a_traceback(args, message, tmp_path):
    (tmp_path / "m.csv").write_text("path,label,split\na.jpg,left,train\n")
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
