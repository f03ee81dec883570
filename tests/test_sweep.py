"""Grid sweeps: one trial per combination, a CSV and a figure, resumed rather than redone."""

from __future__ import annotations

import itertools
import sys
import types

import pandas as pd
import papermill
import pytest

from facelab import sweep
from facelab.config import Experiment
from facelab.data import sources
from facelab.data.manifest import write_manifest
from facelab.data.split import split_frame
from facelab.data.synthetic import render_celeba
from facelab.train import compile_model
from tests.conftest import REPO

GRID = {"lr": [1e-3, 1e-4], "dense_units": [16, 8]}


@pytest.fixture(scope="module")
def celeba(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep") / "celeba-synth"
    render_celeba(folder, n=80, seed=0, progress=False)
    return folder


@pytest.fixture(scope="module")
def manifest(celeba):
    frame = sources.label_celeba("gender", celeba)
    frame["split"] = split_frame(frame, seed=0)
    return write_manifest(frame, celeba.parent / "gender_split.csv")


def tiny(manifest, out, **changes) -> Experiment:
    """FromScratch at 32 px, one epoch: the smallest real fit."""
    return Experiment(task="gender", model="fromscratch", run="t", manifest=str(manifest),
                      output_dir=str(out), image_size=32, batch_size=16, epochs=1,
                      optimizer="adam", **changes)  # fmt: skip


@pytest.fixture
def eager(monkeypatch):
    """Trials compile to run eagerly: on a few tiny batches that beats tracing the graph."""

    def compile_eagerly(model, *args, **kwargs):
        compile_model(model, *args, **kwargs)
        model.run_eagerly = True

    monkeypatch.setattr(sweep, "compile_model", compile_eagerly)


@pytest.fixture
def fake_wandb(monkeypatch):
    """A stand-in ``wandb`` module recording what the sweep logs."""
    calls = {"init": [], "log": [], "finish": 0}

    class Run:
        def log(self, values):
            calls["log"].append(values)

        def finish(self):
            calls["finish"] += 1

    def init(**kwargs):
        calls["init"].append(kwargs)
        return Run()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    return calls


def test_grid_sweep_runs_every_combination_once_and_resumes_without_refitting(
    manifest, tmp_path, eager, fake_wandb, monkeypatch, capsys
):
    exp = tiny(manifest, tmp_path)
    table = sweep.run_sweep(exp, GRID, wandb=True)

    csv = pd.read_csv(tmp_path / "models/gender_fromscratch_t_sweep.csv")
    assert len(table) == len(csv) == 4
    assert set(zip(csv["lr"], csv["dense_units"], strict=True)) == set(
        itertools.product(*GRID.values())
    )
    assert (csv["status"] == "COMPLETED").all() and csv["epochs"].eq(1).all()
    assert csv["val_accuracy"].between(0, 1).all() and (csv["seconds"] > 0).all()
    assert csv["val_accuracy"].is_monotonic_decreasing  # best first
    assert (tmp_path / "plots/gender_fromscratch_t_sweep.png").stat().st_size > 0
    assert (tmp_path / "models/.gender_fromscratch_t_sweep").is_dir()
    out = capsys.readouterr().out
    assert "trial 1 of 4: lr=0.001, dense_units=16" in out and "trial 4 of 4" in out
    assert fake_wandb["init"][0]["mode"] == "offline" and fake_wandb["finish"] == 1
    assert [row["val_accuracy"] for row in fake_wandb["log"]] and len(fake_wandb["log"]) == 4

    for source in (table, csv):  # the returned table or its CSV read back
        best = sweep.best_experiment(exp, source, run="best")
        assert (best.lr, best.dense_units) == (csv["lr"][0], csv["dense_units"][0])
        assert best.run == "best" and best.epochs == exp.epochs

    def no_fit(*args, **kwargs):
        raise AssertionError("a finished trial was trained again")

    monkeypatch.setattr(sweep, "make_dataset", no_fit)
    again = sweep.run_sweep(exp, GRID)
    assert "4 of 4 trials already done" in capsys.readouterr().out
    pd.testing.assert_frame_equal(again, table)

    with pytest.raises(ValueError, match="overwrite=True"):
        sweep.run_sweep(exp.replace(epochs=2), GRID)  # other settings: not resumed silently


def test_per_layer_keys_set_one_dense_layer_of_the_gender_head():
    exp = Experiment(task="gender", model="mobilenetv2", extra={"head": "gender"})
    trial = sweep.apply_settings(exp, {"fc1": 1024, "fc3": 256, "dropout3": 0.5, "l2": 1e-4})
    assert trial.extra["units"] == (1024, 512, 256)
    assert trial.extra["dropouts"] == (0.5, 0.5, 0.5) and trial.extra["l2"] == 1e-4
    assert sweep.apply_settings(exp, {"units": [64, 32, 16]}).extra["units"] == (64, 32, 16)
    assert exp.extra == {"head": "gender"}  # the base experiment is left alone

    stage1 = sweep.grid_settings("stage1")
    assert len(stage1) == 16 and len(sweep.grid_settings("l2")) == 4
    assert len(sweep.grid_settings("dropout")) == 8
    units = {sweep.apply_settings(exp, s).extra["units"] for s in stage1}
    assert units == {(1024, 512, 512), (1024, 512, 256), (512, 512, 512), (512, 512, 256)}


@pytest.mark.parametrize(
    "model, grid, message",
    [
        ("mobilenetv2", {"fc4": [8, 16]}, "3 dense layers"),
        ("mobilenetv2", {"units": [(8, 8, 8)], "fc1": [4]}, "one or the other"),
        ("mobilenetv2", {"colour": [1, 2]}, "unknown"),
        ("mobilenetv2", {"lr": [1e-3, 1e-3]}, "repeats"),
        ("mobilenetv2", {"task": ["light"]}, "cannot be swept"),
        ("fromscratch", {"fc1": [8, 16]}, "has none"),
    ],
)
def test_a_bad_grid_fails_before_any_training(model, grid, message, tmp_path):
    exp = Experiment(task="gender", model=model, extra={"head": "gender"}, output_dir=str(tmp_path))
    with pytest.raises(ValueError, match=message):
        sweep.run_sweep(exp, grid)
    assert not (tmp_path / "models").exists()


def test_wandb_without_the_package_says_how_to_install_it(manifest, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    with pytest.raises(ImportError, match="pip install wandb"):
        sweep.run_sweep(tiny(manifest, tmp_path), GRID, wandb=True)


def test_sweep_notebook_runs_headless_and_trains_the_best(celeba, tmp_path):
    out = tmp_path / "out"
    papermill.execute_notebook(
        str(REPO / "notebooks/gender_sweep.ipynb"), str(tmp_path / "executed.ipynb"),
        parameters=dict(CELEBA_DIR=str(celeba), OUTPUT_DIR=str(out), RUN="nb", MODEL="fromscratch",
                        WEIGHTS=None, IMAGE_SIZE=32, EPOCHS=1, BATCH_SIZE=16,
                        GRID={"lr": [1e-3, 1e-4]}, N_TRIALS=1),
        kernel_name="python3", progress_bar=False, cwd=str(REPO / "notebooks"),
    )  # fmt: skip
    trials = pd.read_csv(out / "models/gender_fromscratch_nb_sweep.csv")
    assert len(trials) == 1 and trials["status"].eq("COMPLETED").all()
    assert (out / "plots/gender_fromscratch_nb_sweep.png").is_file()
    for rel in ("models/gender_fromscratch_nb_best.keras", "models/gender_fromscratch_nb_best.json",
                "plots/gender_fromscratch_nb_best_history.png"):  # fmt: skip
        assert (out / rel).is_file(), rel
