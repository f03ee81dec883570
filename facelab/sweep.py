"""Hyperparameter grid sweeps with keras-tuner: one trial per combination, a CSV and a figure.

A grid maps a setting to the values to try; every combination is one trial. Its keys are:

- an ``Experiment`` field: ``batch_size``, ``lr``, ``optimizer``, ``epochs``, ``image_size``,
  ``weight_decay``, ``dense_units``, ... (not ``task``, ``model``, ``run``, ``manifest``,
  ``pairs``, ``output_dir`` or ``extra``: those name the sweep itself);
- a transfer-head option of ``exp.extra`` (heads.py): ``head``, ``units`` (a tuple per value,
  e.g. ``[(1024, 512, 512), (512, 512, 256)]``), ``dropouts`` (a tuple per value), ``l2``,
  ``pooling``;
- a per-layer head key: ``fc<i>`` sets the units of dense layer ``i`` (1-based) and
  ``dropout<i>`` its dropout rate, the other layers keeping the base head's values (the head of
  ``exp.extra``, e.g. ``{"head": "gender"}``: 512/512/512, dropout 0.5/0.5/0, L2 1e-3);
- ``extra.<name>``: any other ``exp.extra`` knob, e.g. ``extra.freeze_base``.

Outputs under ``exp.output_dir``: the tuner's folder ``models/.<stem>_<name>/`` (finished trials
are kept, so re-running resumes), ``models/<stem>_<name>.csv`` and ``plots/<stem>_<name>.png``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from facelab.config import Experiment
from facelab.data.pipeline import encode_labels, make_dataset
from facelab.data.skipped import SkipLog
from facelab.devices import precision
from facelab.io import atomic_write_csv, atomic_write_text
from facelab.models import build_model
from facelab.models.heads import HEAD_KEYS, head_from_experiment
from facelab.models.transfer import BACKBONES
from facelab.plots import _figure, _note, _save, _style
from facelab.tasks import Task
from facelab.train import balanced_weights, compile_model, load_split_manifest, load_start_model

OBJECTIVE = "val_accuracy"
# The reference gender sweeps (20 epochs each, MobileNetV2, head Dense x3 with FC2 fixed at 512):
# run "stage1" with extra={"head": "gender"}, then "l2" and "dropout" from its best setting.
REFERENCE_GRIDS: dict[str, dict[str, list]] = {
    "stage1": {
        "batch_size": [64, 128],
        "lr": [5e-4, 1e-5],
        "fc1": [1024, 512],
        "fc3": [512, 256],
    },
    "l2": {"l2": [1e-2, 1e-3, 1e-4, 1e-9]},
    "dropout": {"dropout1": [0.0, 0.5], "dropout2": [0.0, 0.5], "dropout3": [0.0, 0.5]},
}
# Experiment fields that say what is swept and where, rather than how it is trained.
_NOT_SWEPT = ("task", "model", "run", "manifest", "pairs", "output_dir", "extra")
_LAYER_KEY = re.compile(r"^(fc|dropout)([1-9][0-9]*)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_STATE_FILE = "facelab_sweep.json"  # in the tuner folder: what the finished trials were run with
_METRICS = ("val_accuracy", "val_loss", "best_epoch", "epochs", "seconds")


def resolve_grid(grid: Mapping[str, Sequence] | str) -> dict[str, list]:
    """A grid as a checked dict of lists; a string names one of ``REFERENCE_GRIDS``."""
    if isinstance(grid, str):
        if grid not in REFERENCE_GRIDS:
            raise ValueError(f"grid {grid!r} unknown; choose one of {sorted(REFERENCE_GRIDS)}")
        grid = REFERENCE_GRIDS[grid]
    if not isinstance(grid, Mapping) or not grid:
        raise ValueError(f"grid must be a non-empty dict {{setting: [values]}}, got {grid!r}")
    checked = {}
    for key, values in grid.items():
        _key_kind(key)
        if isinstance(values, str) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"grid[{key!r}] must be a non-empty list of values, got {values!r}")
        values = [_plain(key, v) for v in values]
        codes = [_encode(v) for v in values]
        if len(set(codes)) != len(codes):
            raise ValueError(f"grid[{key!r}] repeats a value: {values}; give each value once")
        checked[key] = values
    for whole, part in (("units", "fc"), ("dropouts", "dropout")):
        layers = [k for k in checked if (m := _LAYER_KEY.match(k)) and m.group(1) == part]
        if whole in checked and layers:
            raise ValueError(f"grid has both {whole!r} and {layers}; sweep one or the other")
    return checked


def grid_settings(grid: Mapping[str, Sequence] | str) -> list[dict[str, Any]]:
    """Every combination of a grid, one settings dict each (the last key varies fastest)."""
    grid = resolve_grid(grid)
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def apply_settings(exp: Experiment, settings: Mapping[str, Any]) -> Experiment:
    """``exp`` with one trial's settings applied (keys as in the module docstring), checked."""
    fields: dict[str, Any] = {}
    extra = dict(exp.extra)
    layers = []
    for key, value in settings.items():
        kind, name = _key_kind(key)
        value = _plain(key, value)
        if kind == "field":
            fields[name] = value
        elif kind == "extra":
            extra[name] = value
        else:
            layers.append((kind, int(name), key, value))
    trial = exp.replace(**fields, extra=extra)
    if layers:
        head = head_from_experiment(trial)
        units, dropouts = list(head.units), list(head.dropouts)
        for kind, index, key, value in layers:
            if index > len(units):
                raise ValueError(
                    f"grid key {key!r}: the head has {len(units)} dense layers (units "
                    f"{list(units)}); use extra={{'head': 'gender'}} (3 layers) or set "
                    "extra['units'] and extra['dropouts'] with more layers"
                )
            (units if kind == "fc" else dropouts)[index - 1] = value
        extra.update(units=tuple(units), dropouts=tuple(dropouts))
        trial = trial.replace(extra=extra)
    if trial.model in BACKBONES:
        head_from_experiment(trial)  # a bad head setting fails here, before any training
    return trial


class SweepHyperModel(keras_tuner.HyperModel):
    """One grid trial: the model of ``apply_settings(exp, trial settings)``, compiled as
    ``run_experiment`` does, fitted on the manifest's train split for the trial's epochs."""

    def __init__(self, exp: Experiment, grid: Mapping[str, list], frame: pd.DataFrame):
        super().__init__(name=f"{exp.stem}_sweep")
        self.exp, self.grid, self.task = exp, dict(grid), exp.task_spec()
        self.train = frame[frame["split"] == "train"]
        self.val = frame[frame["split"] == "val"]
        self.skip_log = SkipLog()

    def _weights(self, exp: Experiment) -> tuple[dict | None, np.ndarray | None]:
        """Balanced class weights for ``fit`` (single-label) or for the loss (multi-label)."""
        return balanced_weights(exp, self.task, encode_labels(self.train["label"], self.task))

    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        """One ``Choice`` per grid key; values travel as JSON text (tuples and mixed types)."""
        for key, values in self.grid.items():
            hp.Choice(key, [_encode(v) for v in values])

    def experiment(self, hp: keras_tuner.HyperParameters) -> Experiment:
        """The trial's Experiment."""
        return apply_settings(self.exp, decode_settings(hp.values, self.grid))

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """The uncompiled-then-compiled model of the trial, seeded by ``exp.seed``."""
        exp = self.experiment(hp)
        keras.utils.set_random_seed(exp.seed)
        with precision(exp.mixed_precision):
            if exp.from_run:  # fine-tuning sweeps start from an earlier run
                model = load_start_model(exp, self.task)
            else:
                model = build_model(exp, self.task)
            compile_model(model, exp, self.task, weights=self._weights(exp)[1])
        return model

    def fit(
        self,
        hp: keras_tuner.HyperParameters,
        model: keras.Model,
        *args: Any,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        fit_verbose: int | str = 0,
        **kwargs: Any,
    ) -> dict[str, float]:
        """Fit at the trial's batch size and epochs; returns the best epoch's validation metrics."""
        exp = self.experiment(hp)
        weights = self._weights(exp)[0]
        train_ds, val_ds = (
            make_dataset(list(part["path"]), encode_labels(part["label"], self.task), exp,
                         self.task, training=training, skip_log=self.skip_log)
            for part, training in ((self.train, True), (self.val, False))
        )  # fmt: skip
        callbacks = list(callbacks)
        if exp.early_stopping:
            callbacks.append(keras.callbacks.EarlyStopping(patience=exp.early_stopping))
        if exp.reduce_lr:
            callbacks.append(keras.callbacks.ReduceLROnPlateau(patience=exp.reduce_lr, factor=0.5))
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            history = model.fit(
                train_ds, validation_data=val_ds, epochs=exp.epochs, verbose=fit_verbose,
                shuffle=False, class_weight=weights, callbacks=callbacks,
            )  # fmt: skip
        return _trial_metrics(history.history, time.perf_counter() - start)


class _GridTuner(keras_tuner.GridSearch):
    """GridSearch that prints one line per trial and rewrites the sweep's CSV after each."""

    def __init__(self, *args: Any, total: int, report: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.total, self.report = total, report

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        # keras-tuner's own run_trial imports tensorboard (not a facelab dependency) and saves
        # each trial's weights; the sweep keeps only metrics, the best is retrained afterwards.
        keras.backend.clear_session()
        model = self.hypermodel.build(trial.hyperparameters)
        return self.hypermodel.fit(trial.hyperparameters, model, *args, **kwargs)

    def on_trial_begin(self, trial: Any) -> None:
        super().on_trial_begin(trial)
        number = sum(t.status != "RUNNING" for t in self.oracle.trials.values()) + 1
        settings = decode_settings(trial.hyperparameters.values, self.hypermodel.grid)
        print(f"trial {number} of {self.total}: {settings_label(settings)}", flush=True)

    def on_trial_end(self, trial: Any) -> None:
        super().on_trial_end(trial)
        row = _trial_row(trial, self.hypermodel.grid)
        if row["status"] == "COMPLETED":
            print(
                f"  val_accuracy {row['val_accuracy']:.4f} (epoch {row['best_epoch']} of "
                f"{row['epochs']}), val_loss {row['val_loss']:.4f}, {row['seconds']:.0f} s",
                flush=True,
            )
        else:
            last = (trial.message or "").strip().splitlines()[-1:] or ["no message"]
            print(f"  {row['status'].lower()}: {last[0]}", flush=True)
        self.report(self, row)


def run_sweep(
    exp: Experiment,
    grid: Mapping[str, Sequence] | str,
    name: str = "sweep",
    limit: int | None = None,
    overwrite: bool = False,
    verbose: int | str = 0,
    wandb: bool = False,
    wandb_project: str = "facelab",
) -> pd.DataFrame:
    """Train one model per grid combination (keras-tuner GridSearch, objective val_accuracy) and
    return the table of trials, best first; ``limit`` caps the trials, ``overwrite`` starts
    afresh, ``verbose`` is Keras ``fit``'s, ``wandb`` logs each trial offline to W&B."""
    if not _NAME.match(name):
        raise ValueError(f"sweep name {name!r}: use letters, digits, '.', '_' and '-' only")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of trials or None, got {limit}")
    grid = resolve_grid(grid)
    combos = grid_settings(grid)
    head_keys = [k for k in grid if _key_kind(k)[0] != "field" and not k.startswith("extra.")]
    if head_keys and exp.model not in BACKBONES:
        raise ValueError(
            f"grid keys {head_keys} set a transfer head, but model {exp.model!r} has none; use "
            f"a transfer model ({', '.join(sorted(BACKBONES))}) or sweep Experiment fields"
        )
    if head_keys and exp.from_run:
        raise ValueError(
            f"grid keys {head_keys} set the head, but from_run={exp.from_run!r} loads a trained "
            "model whose head is fixed; sweep Experiment fields (lr, batch_size, ...) instead"
        )
    for settings in combos:
        apply_settings(exp, settings)  # every trial's settings are valid before the first fit
    if wandb:
        _import_wandb()  # fails before any work when it is not installed
    task = exp.task_spec()
    frame = load_split_manifest(exp, task)
    _check_trainable(exp, task, frame)
    stem = f"{exp.stem}_{name}"
    root = Path(exp.output_dir)
    project = root / "models" / f".{stem}"
    csv_path, png_path = root / "models" / f"{stem}.csv", root / "plots" / f"{stem}.png"
    _check_same_sweep(project, exp, grid, overwrite)
    atomic_write_text(json.dumps(_sweep_state(exp, grid), indent=2), project / _STATE_FILE)
    total = min(len(combos), limit) if limit else len(combos)

    def report(tuner: _GridTuner, row: dict) -> None:
        atomic_write_csv(sweep_table(tuner.oracle.trials.values(), grid), csv_path)
        if run is not None:
            logged = {k: v for k, v in row.items() if k != "settings"}
            run.log({k: (v if isinstance(v, int | float) else str(v)) for k, v in logged.items()})

    tuner = _GridTuner(
        SweepHyperModel(exp, grid, frame),
        objective=keras_tuner.Objective(OBJECTIVE, direction="max"),
        max_trials=total,
        seed=exp.seed,
        directory=str(root / "models"),
        project_name=f".{stem}",
        overwrite=False,  # `overwrite` has removed the folder already; finished trials resume
        total=total,
        report=report,
    )
    tuner.oracle.verbose = 0  # facelab prints its own one line per trial
    done = sum(t.status in _ENDED for t in tuner.oracle.trials.values())
    axes = " x ".join(f"{k} ({len(v)})" for k, v in grid.items())
    each = "" if "epochs" in grid else f", {exp.epochs} epoch{'s' * (exp.epochs != 1)} each"
    print(f"sweep {stem}: {total} trials over {axes}{each}; {done} of {total} trials already "
          f"done ({project})", flush=True)  # fmt: skip
    run = _wandb_run(exp, grid, name, wandb_project) if wandb else None
    try:
        tuner.search(fit_verbose=verbose)
    finally:
        if run is not None:
            run.finish()
    table = sweep_table(tuner.oracle.trials.values(), grid)
    atomic_write_csv(table, csv_path)
    plot_sweep(table, png_path, f"{stem}: best {OBJECTIVE} per trial")
    if len(table) and np.isfinite(table[OBJECTIVE].iloc[0]):
        print(f"best: {table[OBJECTIVE].iloc[0]:.4f} with {table['label'].iloc[0]}")
    print(f"  table  {csv_path}\n  plot   {png_path}")
    return table


def sweep_table(trials: Iterable[Any], grid: Mapping[str, list]) -> pd.DataFrame:
    """One row per ended trial (its settings, metrics and status), best ``val_accuracy`` first."""
    rows = [_trial_row(t, grid) for t in trials if t.status in _ENDED]
    columns = ["trial", *grid, *_METRICS, "status", "label", "settings"]
    table = pd.DataFrame(rows, columns=columns)
    if table.empty:
        return table
    table = table.sort_values([OBJECTIVE, "trial"], ascending=[False, True], na_position="last")
    return table.reset_index(drop=True)


def best_experiment(exp: Experiment, table: pd.DataFrame, run: str | None = None) -> Experiment:
    """The Experiment of the table's best trial (its first row), optionally under a new run name;
    the table may be the one ``run_sweep`` returned or its CSV read back."""
    done = table[pd.to_numeric(table[OBJECTIVE], errors="coerce").notna()]
    if done.empty:
        raise ValueError("the sweep table has no finished trial; run (or resume) run_sweep first")
    best = done.sort_values(OBJECTIVE, ascending=False, kind="stable").iloc[0]
    settings = {k: _plain(k, v) for k, v in json.loads(best["settings"]).items()}
    chosen = apply_settings(exp, settings)
    return chosen if run is None else chosen.replace(run=run)


def settings_label(settings: Mapping[str, Any]) -> str:
    """Short text for one trial's settings: ``batch_size=64, lr=0.0005, fc1=1024``."""
    return ", ".join(f"{key}={_show(value)}" for key, value in settings.items())


def decode_settings(values: Mapping[str, Any], grid: Mapping[str, list]) -> dict[str, Any]:
    """A trial's settings from keras-tuner's hyperparameter values (JSON text per grid key)."""
    return {key: _plain(key, json.loads(values[key])) for key in grid if key in values}


def plot_sweep(table: pd.DataFrame, path: str | os.PathLike, title: str) -> Figure:
    """A horizontal bar per trial of its best validation accuracy, best on top, labelled by its
    settings; failed trials are listed without a bar."""
    n = max(len(table), 1)
    with _style():
        fig = _figure(9, 1.2 + 0.32 * n)
        ax = fig.subplots()
        if table.empty:
            _note(ax, "no finished trial")
        else:
            values = pd.to_numeric(table[OBJECTIVE], errors="coerce").to_numpy(dtype=float)
            y = np.arange(len(table))
            colours = ["tab:green" if i == 0 else "tab:blue" for i in range(len(table))]
            ax.barh(y, np.nan_to_num(values), color=colours)
            for i, value in enumerate(values):
                text = f" {value:.4f}" if np.isfinite(value) else " failed"
                ax.text(np.nan_to_num(value), i, text, va="center", fontsize=8)
            ax.set_yticks(y, list(table["label"]))
            ax.invert_yaxis()
            ax.set_xlim(0, 1.1)
            ax.set_xlabel(f"best {OBJECTIVE}")
        ax.set_title(title)
        _save(fig, path)
    return fig


_ENDED = ("COMPLETED", "INVALID", "FAILED")


def _key_kind(key: str) -> tuple[str, str]:
    """("field", name), ("extra", name), or ("fc" | "dropout", layer number) for a grid key."""
    fields = {f for f in Experiment.__dataclass_fields__ if f not in _NOT_SWEPT}
    if not isinstance(key, str):
        raise ValueError(f"grid key {key!r} must be a string")
    if key in fields:
        return "field", key
    if key in HEAD_KEYS:
        return "extra", key
    if key.startswith("extra.") and len(key) > len("extra."):
        return "extra", key.removeprefix("extra.")
    if match := _LAYER_KEY.match(key):
        return match.group(1), match.group(2)
    if key in _NOT_SWEPT:
        raise ValueError(f"grid key {key!r} cannot be swept: it names the run; make one sweep each")
    raise ValueError(
        f"grid key {key!r} unknown; use an Experiment field ({', '.join(sorted(fields))}), a head "
        f"option ({', '.join(HEAD_KEYS)}), fc<i>/dropout<i> for dense layer i, or extra.<name>"
    )


def _plain(key: str, value: Any) -> Any:
    """A grid value as plain Python: lists become tuples, NumPy scalars Python numbers."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, list | tuple):
        return tuple(_plain(key, v) for v in value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ValueError(
        f"grid[{key!r}] value {value!r} ({type(value).__name__}) must be a number, string, bool, "
        "None or a tuple of those"
    )


def _encode(value: Any) -> str:
    return json.dumps(value)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "/".join(_show(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _trial_metrics(history: Mapping[str, list], seconds: float) -> dict[str, float]:
    """The epoch with the best val_accuracy: its accuracy and loss, plus epochs run and time."""
    accuracy = np.asarray(history.get(OBJECTIVE, []), dtype=float)
    if not len(accuracy) or not np.isfinite(accuracy).any():
        raise ValueError(f"the fit logged no {OBJECTIVE}; is the validation split empty?")
    best = int(np.nanargmax(accuracy))
    losses = history.get("val_loss", [math.nan] * len(accuracy))
    return {
        OBJECTIVE: float(accuracy[best]),
        "val_loss": float(losses[best]),
        "best_epoch": best + 1,
        "epochs": len(accuracy),
        "seconds": round(seconds, 1),
    }


def _trial_row(trial: Any, grid: Mapping[str, list]) -> dict[str, Any]:
    settings = decode_settings(trial.hyperparameters.values, grid)
    row: dict[str, Any] = {"trial": trial.trial_id}
    row.update({k: _show(v) if isinstance(v, tuple) else v for k, v in settings.items()})
    for metric in _METRICS:
        value = trial.metrics.get_last_value(metric) if trial.metrics.exists(metric) else math.nan
        integer = metric in ("best_epoch", "epochs") and not math.isnan(value)
        row[metric] = int(value) if integer else value
    row["status"] = trial.status
    row["label"] = settings_label(settings)
    row["settings"] = json.dumps(settings)
    return row


def _check_trainable(exp: Experiment, task: Task, frame: pd.DataFrame) -> None:
    if task.multilabel:
        raise ValueError(f"task {task.name!r} is multi-label; sweeps need a single-label task")
    if (frame["split"] == "val").sum() == 0:
        raise ValueError(f"{exp.manifest}: no 'val' rows; a sweep ranks trials on validation")


def _sweep_state(exp: Experiment, grid: Mapping[str, list]) -> dict[str, Any]:
    """What finished trials depend on: the base Experiment (but its output folder) and the grid."""
    base = {k: v for k, v in exp.to_dict().items() if k != "output_dir"}
    state = {"experiment": base, "grid": {k: [_encode(v) for v in vs] for k, vs in grid.items()}}
    return json.loads(json.dumps(state, default=str))


def _check_same_sweep(
    project: Path, exp: Experiment, grid: Mapping[str, list], overwrite: bool
) -> None:
    """Remove the tuner folder with ``overwrite``; else refuse to resume a different sweep."""
    if overwrite:
        shutil.rmtree(project, ignore_errors=True)
        return
    saved = project / _STATE_FILE
    if not saved.is_file():
        return
    old, new = json.loads(saved.read_text(encoding="utf-8")), _sweep_state(exp, grid)
    if old != new:
        changed = [k for k in new["experiment"] if old["experiment"].get(k) != new["experiment"][k]]
        what = f"Experiment fields {changed}" if changed else "the grid"
        raise ValueError(
            f"{project} holds a sweep run with other settings ({what} differ); pass "
            "overwrite=True to start it again, or another name= to keep both"
        )


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError:
        raise ImportError(
            "wandb=True needs Weights & Biases: pip install wandb (or pass wandb=False)"
        ) from None
    return wandb


def _wandb_run(exp: Experiment, grid: Mapping[str, list], name: str, project: str) -> Any:
    """An offline W&B run for the whole sweep; each trial is logged to it as one step."""
    return _import_wandb().init(
        project=project,
        name=f"{exp.stem}_{name}",
        mode="offline",
        dir=str(Path(exp.output_dir)),
        config={
            "experiment": exp.to_dict(),
            "grid": {k: list(map(str, v)) for k, v in grid.items()},
        },
    )
