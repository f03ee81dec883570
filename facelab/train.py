"""One run: fit with the standard callbacks, evaluate, predict, plot, and write the run card."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import shutil
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from filelock import FileLock

from facelab import evaluate, plots
from facelab.config import Experiment
from facelab.data.manifest import read_manifest
from facelab.data.pipeline import encode_labels, make_dataset
from facelab.data.skipped import SkipLog
from facelab.data.split import missing_classes
from facelab.devices import distribution_strategy, precision
from facelab.io import atomic_path, atomic_write_csv, atomic_write_text
from facelab.losses import WeightedBinaryCrossentropy
from facelab.lr_finder import LRFinderResult
from facelab.lr_finder import find_lr as lr_range_test
from facelab.machine import device, versions
from facelab.models import build_model
from facelab.optim import make_optimizer
from facelab.predict import measure_inference, predict_paths, prediction_frame
from facelab.tasks import Task, get_task


class RunPaths:
    """Where each output of a run goes: ``models/``, ``plots/``, ``predictions/`` under one folder."""

    def __init__(self, exp: Experiment):
        root = Path(exp.output_dir)
        stem = exp.stem
        self.models, self.plots, self.predictions = (
            root / "models",
            root / "plots",
            root / "predictions",
        )
        self.keras = self.models / f"{stem}.keras"
        self.h5 = self.models / f"{stem}.h5"
        self.card = self.models / f"{stem}.json"
        self.results = self.models / "results.csv"
        self.work = self.models / f".{stem}.work"  # checkpoints and history while a run is going
        self.history = self.models / f"{stem}_history.csv"
        self.stages = self.models / f"{stem}_stages.csv"  # runs started --from-run
        self.history_plot = self.plots / f"{stem}_history.png"
        self.confusion_plot = self.plots / f"{stem}_confusion.png"
        self.attributes_plot = self.plots / f"{stem}_attributes.png"  # multi-label tasks
        self.samples_plot = self.plots / f"{stem}_samples.png"
        self.predictions_csv = self.predictions / f"{stem}.csv"

    def make(self) -> None:
        for folder in (self.models, self.plots, self.predictions, self.work):
            folder.mkdir(parents=True, exist_ok=True)


def load_split_manifest(exp: Experiment, task: Task) -> pd.DataFrame:
    """The run's manifest, checked: a split column, known labels, every class in the train split.

    For a subset of attributes, each label keeps only the attributes of the subset."""
    if not exp.manifest:
        raise ValueError(
            "no manifest given; pass --manifest CSV (made by label + split_dataset.py)"
        )
    frame = read_manifest(exp.manifest, get_task(task.name), require_split=True)
    if task.multilabel:
        keep = set(task.classes)
        frame["label"] = [
            "|".join(n for n in str(label).split("|") if n in keep) for label in frame["label"]
        ]
        return frame
    gaps = missing_classes(frame, task.classes)
    if "train" not in set(frame["split"]):
        raise ValueError(f"{exp.manifest}: no row has split 'train'; re-run split_dataset.py")
    if gaps.get("train"):
        raise ValueError(
            f"{exp.manifest}: the train split has no sample of {gaps['train']}; the model "
            "cannot learn a class it never sees — add samples or re-split with another seed"
        )
    for split, absent in gaps.items():
        print(f"warning: the {split} split has no sample of {absent}; its metrics leave them out")
    return frame


def class_weights(targets: np.ndarray, task: Task) -> np.ndarray:
    """Balanced weights from the training targets: per class ``n / (k * count)`` (single-label,
    shape (k,)); per attribute the weights of its negatives and positives (multi-label, (2, k))."""
    if task.multilabel:
        positive = np.clip(targets.mean(axis=0), 0.01, 0.99)  # never an infinite weight
        return np.stack([0.5 / (1.0 - positive), 0.5 / positive]).astype(np.float32)
    counts = np.maximum(targets.sum(axis=0), 1.0)
    return (len(targets) / (len(counts) * counts)).astype(np.float32)


def balanced_weights(
    exp: Experiment, task: Task, targets: np.ndarray
) -> tuple[dict[int, float] | None, np.ndarray | None]:
    """``exp.class_weight`` as (``fit``'s class_weight, the loss's weights): single-label tasks
    weigh classes in ``fit``, multi-label ones through the loss; (None, None) when off."""
    if exp.class_weight != "balanced":
        return None, None
    weights = class_weights(targets, task)
    if task.multilabel:
        return None, weights
    return dict(enumerate(weights.tolist())), None


def compile_model(
    model: keras.Model,
    exp: Experiment,
    task: Task,
    lr: float | None = None,
    weights: np.ndarray | None = None,
) -> None:
    """Compile with the Experiment's optimizer and the task's loss (multi-label with
    ``weights`` from :func:`class_weights`: a weighted binary cross-entropy)."""
    optimizer = make_optimizer(exp if lr is None else exp.replace(lr=lr))
    if task.multilabel:
        loss = "binary_crossentropy" if weights is None else WeightedBinaryCrossentropy(weights)
        metrics = [keras.metrics.BinaryAccuracy(name="accuracy")]
    else:
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
        loss = "categorical_crossentropy"
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=exp.jit_compile)
    # Every variable made now, eagerly: the optimizer's slots here, the metrics' as objects (a
    # name like "accuracy" makes its metric inside the first train step). A variable made while
    # tracing makes TensorFlow trace the step twice: seconds per run for a large backbone.
    model.optimizer.build(model.trainable_variables)


def standard_callbacks(
    exp: Experiment, paths: RunPaths, best_so_far: float, backup: str = "backup"
) -> list:
    """Best-checkpoint, CSV history, resume-after-disconnect, and the optional schedule callbacks."""
    callbacks = [
        keras.callbacks.ModelCheckpoint(
            paths.work / "best.keras",
            monitor="val_loss",
            save_best_only=True,
            initial_value_threshold=best_so_far if np.isfinite(best_so_far) else None,
        ),
        keras.callbacks.CSVLogger(paths.work / "history.csv", append=True),
        # Two checkpoints: a kill while the backup is being written falls back to the one before.
        keras.callbacks.BackupAndRestore(paths.work / backup, double_checkpoint=True),
    ]
    if exp.early_stopping:
        callbacks.append(
            keras.callbacks.EarlyStopping(patience=exp.early_stopping, restore_best_weights=False)
        )
    if exp.reduce_lr:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(patience=exp.reduce_lr, factor=0.5))
    return callbacks


# Files in a run's work folder that mean "an interrupted run is here to resume".
_BACKUPS = ("backup", "backup_fine_tune")
_PHASE1_WEIGHTS = "phase1_end.weights.h5"


def _resuming(paths: RunPaths) -> bool:
    """Whether an interrupted run is there to resume; a new run starts its history afresh."""
    markers = [paths.work / name for name in (*_BACKUPS, _PHASE1_WEIGHTS)]
    if any(m.exists() for m in markers):
        return True
    (paths.work / "history.csv").unlink(missing_ok=True)
    (paths.work / "best.keras").unlink(missing_ok=True)
    return False


def _best_val_loss(paths: RunPaths) -> float:
    """The lowest validation loss in the run's history so far (inf when none)."""
    history = paths.work / "history.csv"
    if history.is_file() and history.stat().st_size:
        past = pd.read_csv(history)
        if "val_loss" in past and len(past):
            return float(past["val_loss"].min())
    return float("inf")


def fit(
    exp: Experiment,
    task: Task,
    frame: pd.DataFrame,
    paths: RunPaths,
    log: SkipLog,
    verbose: int | str = 2,
) -> tuple[keras.Model, pd.DataFrame]:
    """Build, compile and fit on the train split: phase 1, then (``exp.fine_tune_epochs``)
    phase 2 with the top ``exp.fine_tune_layers`` of the backbone unfrozen at
    ``exp.fine_tune_lr``. An interrupted run resumes from its last finished epoch."""
    train = frame[frame["split"] == "train"]
    val = frame[frame["split"] == "val"]
    if val.empty:
        raise ValueError(
            f"{exp.manifest}: no 'val' rows; best-epoch selection needs a validation split"
        )
    strategy = distribution_strategy(exp.devices)
    batched = exp.replace(batch_size=exp.batch_size * strategy.num_replicas_in_sync)
    train_targets = encode_labels(train["label"], task)
    fit_weights, loss_weights = balanced_weights(exp, task, train_targets)
    train_ds = make_dataset(
        list(train["path"]), train_targets, batched, task, training=True, skip_log=log,
    )  # fmt: skip
    val_ds = make_dataset(
        list(val["path"]), encode_labels(val["label"], task), batched, task,
        training=False, skip_log=log,
    )  # fmt: skip
    with strategy.scope(), precision(exp.mixed_precision):
        model = load_start_model(exp, task) if exp.from_run else build_model(exp, task)
        compile_model(model, exp, task, weights=loss_weights)
    if _resuming(paths):
        print(f"resuming {exp.stem} from its last finished epoch")
    phase1_end = paths.work / _PHASE1_WEIGHTS

    def run_phase(first_epoch: int, last_epoch: int, backup: str) -> None:
        with warnings.catch_warnings():
            # The dataset's length is unknown (unreadable images are filtered out), so Keras
            # warns at each epoch's end that the input "ran out of data"; that is how it ends.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            model.fit(
                train_ds, validation_data=val_ds, initial_epoch=first_epoch, epochs=last_epoch,
                verbose=verbose, shuffle=False, class_weight=fit_weights,
                callbacks=standard_callbacks(exp, paths, _best_val_loss(paths), backup),
            )  # fmt: skip

    if phase1_end.exists():
        model.load_weights(phase1_end)  # phase 1 finished before an interruption
    else:
        run_phase(0, exp.epochs, _BACKUPS[0])
        if exp.fine_tune_epochs:
            model.save_weights(phase1_end)
    if exp.fine_tune_epochs:
        from facelab.models.transfer import prepare_fine_tuning

        print(f"phase 2: fine-tuning {exp.fine_tune_layers} layers at lr {exp.fine_tune_lr}")
        prepare_fine_tuning(model, exp.fine_tune_layers)
        with strategy.scope():
            compile_model(model, exp, task, lr=exp.fine_tune_lr, weights=loss_weights)
        run_phase(exp.epochs, exp.epochs + exp.fine_tune_epochs, _BACKUPS[1])
    if (paths.work / "best.keras").exists():
        model = keras.models.load_model(paths.work / "best.keras", compile=False, safe_mode=True)
    history_file = paths.work / "history.csv"
    history = pd.read_csv(history_file) if history_file.is_file() else pd.DataFrame()
    if "epoch" in history:  # a kill between the history row and the backup repeats an epoch
        history = history.drop_duplicates("epoch", keep="last").reset_index(drop=True)
    return model, history


def find_lr(
    exp: Experiment, min_lr: float = 1e-7, max_lr: float = 1.0, steps: int = 200
) -> LRFinderResult:
    """Learning-rate range test for a run: a fresh model of ``exp`` trained for ``steps``
    batches of its train split while the lr grows exponentially (see :mod:`facelab.lr_finder`)."""
    task = exp.task_spec()
    keras.utils.set_random_seed(exp.seed)
    frame = load_split_manifest(exp, task)
    train = frame[frame["split"] == "train"]
    dataset = make_dataset(
        list(train["path"]), encode_labels(train["label"], task), exp, task, training=True
    )
    model = build_model(exp, task)
    compile_model(model, exp, task)
    return lr_range_test(model, dataset, min_lr=min_lr, max_lr=max_lr, steps=steps)


def from_run_files(exp: Experiment) -> tuple[Path, Path]:
    """The model file and run card of the earlier run that ``exp.from_run`` names."""
    if exp.from_run.endswith((".keras", ".h5")):
        model = Path(exp.from_run)
    else:
        model = RunPaths(exp.replace(run=exp.from_run, from_run="")).keras
    if not model.is_file():
        raise FileNotFoundError(
            f"{model}: no model for --from-run {exp.from_run!r}; train that run first "
            f"(python -m facelab train --task {exp.task} --model {exp.model} --run "
            f"{exp.from_run} ...) or pass the path of a .keras file"
        )
    return model, model.with_suffix(".json")


def load_start_model(exp: Experiment, task: Task) -> keras.Model:
    """The earlier run's best model, checked against this run's input size and classes; a
    frozen backbone is unfrozen (BatchNormalization stays in inference mode) for fine-tuning."""
    from facelab.models.transfer import get_backbone, prepare_fine_tuning
    from facelab.predict import load_model_file

    model_file, _ = from_run_files(exp)
    model = load_model_file(model_file)
    size, outputs = int(model.input_shape[1]), int(model.output_shape[-1])
    if size != exp.image_size:
        raise ValueError(
            f"{model_file}: the model takes {size} px images but this run has image_size "
            f"{exp.image_size}; pass --image-size {size}"
        )
    if outputs != task.num_classes:
        raise ValueError(
            f"{model_file}: the model has {outputs} outputs but task {task.name!r} has "
            f"{task.num_classes} classes; start from a run of the same task"
        )
    try:
        backbone = get_backbone(model)
    except ValueError:  # FromScratch, Hassner CNN: every layer trains already
        return model
    if not backbone.trainable:
        prepare_fine_tuning(model, exp.fine_tune_layers or -1)
    print(f"starting from {model_file} with its base unfrozen, lr {exp.lr}")
    return model


def stage_table(
    exp: Experiment, task: Task, model: keras.Model, metrics: dict, log: SkipLog
) -> pd.DataFrame:
    """Test accuracy of the earlier run's model and of this run's model on both runs' test
    splits (e.g. CelebA pretraining vs Adience fine-tuning), one row per stage."""
    from facelab.predict import load_model_file

    model_file, card_file = from_run_files(exp)
    earlier = json.loads(card_file.read_text()) if card_file.is_file() else {}
    earlier_manifest = (earlier.get("experiment") or {}).get("manifest", "")
    this = Path(exp.manifest)
    names = {"this": this.stem}
    if earlier_manifest and Path(earlier_manifest).is_file():
        before = Path(earlier_manifest)
        names["earlier"] = before.stem
        if before.stem == this.stem and before.resolve() != this.resolve():
            # e.g. two split.csv: name each test set by its folder too, or one column hides the other
            names = {"this": f"{this.parent.name}/{this.stem}",
                     "earlier": f"{before.parent.name}/{before.stem}"}  # fmt: skip

    def test_accuracy(stage_model: keras.Model, manifest: str) -> float:
        frame = load_split_manifest(exp.replace(manifest=manifest), task)
        test = frame[frame["split"] == "test"]
        if test.empty:
            return float("nan")
        split_metrics, _ = evaluate_splits(stage_model, task, test, exp, log)
        return float(split_metrics["test"]["accuracy"])

    before = load_model_file(model_file)
    rows = [{"stage": earlier.get("stem", model_file.stem), "model": str(model_file)},
            {"stage": exp.stem, "model": str(RunPaths(exp).keras)}]  # fmt: skip
    rows[0][names["this"]] = test_accuracy(before, exp.manifest)
    rows[1][names["this"]] = float(metrics.get("test", {}).get("accuracy", float("nan")))
    if "earlier" in names:
        past = (earlier.get("metrics") or {}).get("test", {}).get("accuracy", float("nan"))
        rows[0][names["earlier"]] = float(past)
        rows[1][names["earlier"]] = test_accuracy(model, earlier_manifest)
    return pd.DataFrame(rows)


def joined_history(exp: Experiment, history: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The earlier run's history followed by this run's (epochs renumbered), and where this
    run starts; this run's history alone when the earlier one is not there."""
    _, card_file = from_run_files(exp)
    earlier = card_file.with_name(card_file.stem + "_history.csv")
    if not earlier.is_file() or history.empty:
        return history, 0
    past = pd.read_csv(earlier)
    shifted = history.assign(epoch=history["epoch"] + len(past))
    return pd.concat([past, shifted], ignore_index=True), len(past)


def save_model(model: keras.Model, paths: RunPaths) -> None:
    """Write `.keras` and `.h5`, each atomically (temp file, then rename)."""
    for target in (paths.keras, paths.h5):
        with atomic_path(target) as tmp, _quiet_absl():
            model.save(tmp)  # .h5 is the design's format; Keras logs that it is legacy


@contextlib.contextmanager
def _quiet_absl():
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def evaluate_splits(
    model: keras.Model, task: Task, frame: pd.DataFrame, exp: Experiment, log: SkipLog
) -> tuple[dict, pd.DataFrame]:
    """Predict every manifest row once; metrics per split and the prediction frame."""
    kept, probs = predict_paths(model, list(frame["path"]), exp.batch_size, log)
    by_path = frame.set_index("path")
    predictions = prediction_frame(kept, probs, task, list(by_path.loc[kept, "label"]))
    predictions.insert(2, "split", list(by_path.loc[kept, "split"]))
    metrics = {}
    for split in ("train", "val", "test"):
        rows = (predictions["split"] == split).to_numpy()
        if not rows.any():
            continue
        y_true = encode_labels(predictions.loc[rows, "label"], task)
        if task.multilabel:
            metrics[split] = evaluate.multilabel_metrics(y_true, probs[rows], task.classes)
        else:
            metrics[split] = evaluate.classification_metrics(y_true, probs[rows], task.classes)
    return metrics, predictions


def append_result(row: dict, results: Path) -> None:
    """Append one row to `models/results.csv` under a file lock (parallel runs both land)."""
    with FileLock(str(results) + ".lock"):
        table = pd.read_csv(results) if results.is_file() else pd.DataFrame()
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
        atomic_write_csv(table, results)


def write_plots(
    model: keras.Model,
    exp: Experiment,
    task: Task,
    paths: RunPaths,
    history: pd.DataFrame,
    metrics: dict,
    predictions: pd.DataFrame,
    phase_starts: tuple[int, ...] = (),
) -> None:
    """History curves, confusion matrix and a 3x3 sample grid of the test (or validation) split."""
    from facelab.data.images import read_image

    if not history.empty:
        plots.plot_history(history, paths.history_plot, exp.stem, phase_starts)
    split = "test" if "test" in metrics else "val"
    if split in metrics and task.multilabel:
        plots.plot_attribute_bars(
            metrics[split]["per_attribute"], paths.attributes_plot, f"{exp.stem} ({split})"
        )
    if split in metrics and not task.multilabel:
        plots.plot_confusion(
            metrics[split]["confusion_matrix"],
            task.classes,
            paths.confusion_plot,
            f"{exp.stem} ({split})",
        )
    sample = predictions[predictions["split"] == split]
    sample = sample.sample(min(9, len(sample)), random_state=exp.seed) if len(sample) else sample
    if len(sample):
        images = np.stack([read_image(p, exp.image_size) for p in sample["path"]])
        plots.plot_samples(
            images,
            list(sample["label"]),
            list(sample["predicted"]),
            list(sample["confidence"] / 100.0),
            paths.samples_plot,
            f"{exp.stem} ({split})",
        )


def run_experiment(exp: Experiment, command: str = "", verbose: int | str = 2) -> dict:
    """Train, evaluate, predict and plot one run; returns the run card (also written to disk)."""
    task = exp.task_spec()
    keras.utils.set_random_seed(exp.seed)  # Python, NumPy and TensorFlow
    if exp.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    frame = load_split_manifest(exp, task)
    paths = RunPaths(exp)
    paths.make()
    log = SkipLog()
    start = time.perf_counter()
    print(
        f"run {exp.stem}: {len(frame)} images, {exp.epochs} epochs, {exp.model} at {exp.image_size}px"
    )
    model, history = fit(exp, task, frame, paths, log, verbose)
    train_seconds = time.perf_counter() - start
    save_model(model, paths)
    metrics, predictions = evaluate_splits(model, task, frame, exp, log)
    inference = measure_inference(model, (1, exp.batch_size))
    atomic_write_csv(predictions, paths.predictions_csv)
    if not history.empty:
        atomic_write_csv(history, paths.history)
    card = {
        "stem": exp.stem,
        "task": exp.task,
        "model": exp.model,
        "run": exp.run,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "classes": list(task.classes),
        "experiment": exp.to_dict(),
        "command": command,
        "versions": versions(),
        "device": device(),
        "epochs_run": len(history),
        "best_epoch": _best_epoch(history),
        "wall_time_s": round(time.perf_counter() - start, 1),
        "train_time_s": round(train_seconds, 1),
        "parameters": int(model.count_params()),
        "skipped": len(log),
        "inference": inference,
        "metrics": metrics,
    }
    if exp.from_run:
        stages = stage_table(exp, task, model, metrics, log)
        atomic_write_csv(stages, paths.stages)
        card["stages"] = stages.drop(columns="model").to_dict(orient="records")
        print("test accuracy by stage:\n" + stages.drop(columns="model").to_string(index=False))
    atomic_write_text(json.dumps(card, indent=2, default=_json_default), paths.card)
    append_result(evaluate.results_row(card), paths.results)
    phase_starts = (exp.epochs,) if exp.fine_tune_epochs else ()
    if exp.from_run:  # one curve from the first epoch of the earlier run
        history, start = joined_history(exp, history)
        phase_starts = tuple(s + start for s in (0, *phase_starts) if s + start)
    write_plots(model, exp, task, paths, history, metrics, predictions, phase_starts)
    log.write_next_to(paths.card)
    shutil.rmtree(paths.work, ignore_errors=True)
    _print_summary(card, paths, task)
    return card


def _best_epoch(history: pd.DataFrame) -> int | None:
    if history.empty or "val_loss" not in history:
        return None
    return int(history.loc[history["val_loss"].idxmin(), "epoch"]) + 1


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _print_summary(card: dict, paths: RunPaths, task: Task) -> None:
    parts = [
        f"{split} acc {m['accuracy']:.4f} loss {m['loss']:.4f}"
        for split, m in card["metrics"].items()
        if "accuracy" in m
    ]
    print(f"{card['stem']}: " + " | ".join(parts) + f" ({card['wall_time_s']:.0f} s)")
    print(f"  model  {paths.keras}  (+ .h5, run card {paths.card.name})")
    kind = paths.attributes_plot if task.multilabel else paths.confusion_plot
    print(f"  plots  {paths.history_plot}, {kind.name}, {paths.samples_plot.name}")
    print(f"  preds  {paths.predictions_csv}")
