"""Mixed precision, XLA, two devices and test-time augmentation run end to end on CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import cv2
import keras
import numpy as np
import pandas as pd
import pytest

from facelab import devices, machine
from facelab.devices import mixed_policy
from facelab.models.scratch import build_fromscratch
from facelab.predict import iter_predictions
from facelab.tasks import get_task
from facelab.train import run_experiment
from tests.conftest import REPO
from tests.test_train import light_manifest, tiny  # noqa: F401  (fixture)


def test_mixed_precision_and_xla_train_end_to_end(light_manifest, tmp_path):  # noqa: F811
    # tiny()'s two conv blocks: XLA compiles the train step in seconds, not most of a minute.
    exp = tiny(light_manifest, tmp_path, mixed_precision=True, jit_compile=True)
    card = run_experiment(exp, verbose=0)
    assert card["experiment"]["mixed_precision"] and card["epochs_run"] == 2
    model = keras.models.load_model(tmp_path / "models/light_fromscratch_t.keras")
    assert model.layers[-1].dtype_policy.compute_dtype == "float32"
    assert any(layer.dtype_policy.name == mixed_policy() for layer in model.layers)
    assert keras.config.dtype_policy().name == "float32"  # the global policy was restored


def test_two_devices_train_a_model_that_predicts_like_a_single_device_one(light_manifest, tmp_path):  # noqa: F811
    script = textwrap.dedent(f"""
        from facelab.devices import split_cpu
        split_cpu(2)
        from facelab.train import run_experiment
        from tests.test_train import tiny
        card = run_experiment(tiny({light_manifest!r}, {str(tmp_path)!r}, devices=2), verbose=0)
        print("replicated epochs", card["epochs_run"])
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicated epochs 2" in result.stdout
    written = pd.read_csv(tmp_path / "predictions/light_fromscratch_t.csv")
    model = keras.models.load_model(tmp_path / "models/light_fromscratch_t.keras")
    names, probs = zip(*iter_predictions(model, list(written["path"]), progress=False), strict=True)
    assert np.allclose(
        np.concatenate(probs) * 100, written[["p_left", "p_center", "p_right"]], atol=0.01
    )


def test_test_time_augmentation_is_mirror_equivariant(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    cv2.imwrite(str(tmp_path / "mirrored.png"), image[:, ::-1])
    keras.utils.set_random_seed(0)
    model = build_fromscratch((32, 32, 3), 3)
    task = get_task("light")
    paths = [str(tmp_path / "a.png"), str(tmp_path / "mirrored.png")]
    ((_, plain),) = iter_predictions(model, paths, progress=False)
    ((_, tta),) = iter_predictions(model, paths, progress=False, tta=task)
    assert not np.allclose(plain[0][[2, 1, 0]], plain[1], atol=1e-4)  # the model is not symmetric
    assert np.allclose(tta[0][[2, 1, 0]], tta[1], atol=1e-5)  # with TTA: left and right swap


def test_predict_command_with_tta_writes_averaged_probabilities(tmp_path, capsys):
    from facelab.__main__ import main

    image = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    build_fromscratch((32, 32, 3), 3).save(tmp_path / "m.keras")
    args = ["predict", str(tmp_path / "m.keras"), str(tmp_path / "a.png"), "--task", "light"]
    assert main([*args, "--out", str(tmp_path / "plain.csv")]) == 0
    assert main([*args, "--out", str(tmp_path / "tta.csv"), "--tta"]) == 0
    plain, tta = pd.read_csv(tmp_path / "plain.csv"), pd.read_csv(tmp_path / "tta.csv")
    assert not np.allclose(plain["p_left"], tta["p_left"], atol=1e-3)
    assert np.isclose(tta[["p_left", "p_center", "p_right"]].sum(axis=1), 100, atol=0.05).all()


def test_every_speed_switch_is_a_train_flag():
    import argparse

    from facelab.run_args import add_train_args, experiment_from_args

    parser = argparse.ArgumentParser()
    add_train_args(parser)
    args = parser.parse_args(["--task", "light", "--manifest", "m.csv", "--mixed-precision",
                              "--jit-compile", "--devices", "2", "--deterministic"])  # fmt: skip
    exp = experiment_from_args(args)
    assert (exp.mixed_precision, exp.jit_compile, exp.devices, exp.deterministic) == (
        True,
        True,
        2,
        True,
    )


def test_mixed_precision_warns_where_the_cpu_emulates_bfloat16(monkeypatch):
    monkeypatch.setattr(devices, "mixed_precision_pays", lambda: False)
    with pytest.warns(UserWarning, match="without native bfloat16"), devices.precision(True):
        assert keras.config.dtype_policy().name == mixed_policy()
    assert keras.config.dtype_policy().name == "float32"
    monkeypatch.setattr(devices, "mixed_precision_pays", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with devices.precision(True), devices.precision(False):
            pass


def test_bfloat16_support_is_read_from_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx2", "fma"})
    assert not machine.cpu_has_bfloat16()
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert machine.cpu_has_bfloat16()
