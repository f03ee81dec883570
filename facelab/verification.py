"""Face verification runs on LFW pairs: train, choose the threshold on validation, evaluate, plot.

A run reads the development pairs (``pairsDevTrain.txt`` for training and validation people,
``pairsDevTest.txt`` for testing), holds a seeded share of the training people out for validation
(no person is in two splits), trains the Koch-style siamese network on pairs (binary
cross-entropy) or the embedding network on people (supervised contrastive, contrastive or triplet
loss), keeps the epoch with the best validation AUC, picks the decision threshold that maximises
validation accuracy, and only then scores the test pairs. Outputs follow every other run:
``models/<stem>.keras|.h5|.json``, a results row, ``plots/<stem>_history|_roc|_pairs.png`` and
``predictions/<stem>.csv``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    log_loss,
    roc_auc_score,
    roc_curve,
)

from facelab import evaluate, plots
from facelab.config import Experiment
from facelab.data.images import read_image
from facelab.data.lfw import read_lfw_pairs
from facelab.data.pairs import ImageBank, make_pair_dataset, verification_splits
from facelab.data.skipped import SkipLog
from facelab.io import atomic_write_csv, atomic_write_text
from facelab.machine import device, versions
from facelab.models import siamese
from facelab.optim import make_optimizer
from facelab.tasks import get_task
from facelab.train import RunPaths, append_result, save_model

MODELS = ("siamese", "embedding")
CLASSES = ("different", "same")
MONITOR = "val_auc"  # best epoch, early stopping and plateau schedule all follow validation AUC
LR_SCHEDULES = ("none", "cosine", "plateau")
HARDEST_PAIRS = 8  # pairs in the hardest-pairs grid

# Defaults of the verification knobs that live in ``Experiment.extra``.
EXTRA_DEFAULTS = {
    "crop": siamese.DEFAULT_CROP,  # face crop: fraction of image_size (or pixels when > 1)
    "val_fraction": 0.15,  # share of the training people held out for validation
    "train_pairs": 3000,  # training pairs per epoch: official ones + balanced extra pairs
    "val_pairs": 600,  # validation pairs: official ones + balanced extra pairs
    "loss": "supcon",  # embedding: supcon | contrastive | triplet
    "temperature": siamese.DEFAULT_TEMPERATURE,  # supcon
    "margin": None,  # contrastive / triplet (None: the loss's default)
    "label_smoothing": 0.0,  # siamese: binary cross-entropy label smoothing
    "batchnorm": "before",  # before | after | none (relative to each ReLU)
    "lr_schedule": "cosine",  # none | cosine (per epoch, to 0) | plateau (halve on a val plateau)
    "time_budget_s": 0,  # stop before an epoch that would end past this many seconds; 0: off
}


def verification_experiment(model: str = "embedding", pairs: str = "", **changes) -> Experiment:
    """An Experiment with the settings that work for LFW verification on a CPU; ``changes`` override.

    ``extra`` entries given in ``changes["extra"]`` are merged over ``EXTRA_DEFAULTS``.
    """
    if model not in MODELS:
        raise ValueError(f"verification model {model!r} unknown; choose one of {MODELS}")
    extra = {**EXTRA_DEFAULTS, **changes.pop("extra", {})}
    values = dict(
        task="verification",
        model=model,
        pairs=str(pairs),
        image_size=128,  # the full 250 px LFW image; the towers keep its central half
        batch_size=64,  # pairs per batch (128 images)
        epochs=14,
        optimizer="adam",
        lr=2e-3,
        dense_dropout=0.3,
        conv_dropout=0.0,
        dense_units=512,  # siamese feature layer (Koch: 4096)
        augment=True,
        rotation=10.0,
        shift=0.05,
        zoom=0.1,
        brightness=0.2,
        flip=True,
        extra=extra,
    )
    values.update(changes)
    return Experiment(**values)


def knob(exp: Experiment, name: str):
    """A verification knob: ``exp.extra[name]``, else its default in ``EXTRA_DEFAULTS``."""
    return exp.extra.get(name, EXTRA_DEFAULTS[name])


def choose_threshold(same: np.ndarray, scores: np.ndarray) -> float:
    """The threshold maximising accuracy of ``score >= threshold`` on these (validation) pairs.

    It lies halfway between the two scores it separates, so small shifts do not flip decisions.
    """
    same, scores = _check_scores(same, scores)
    if len(set(same.tolist())) < 2:
        raise ValueError(
            "threshold choice needs matched and mismatched pairs; the validation pairs hold only "
            f"{'matched' if same[0] else 'mismatched'} ones"
        )
    fpr, tpr, thresholds = roc_curve(same, scores, drop_intermediate=False)
    positives = same.sum()
    accuracy = (tpr * positives + (1 - fpr) * (len(same) - positives)) / len(same)
    best = int(np.argmax(accuracy))
    if best == 0:  # everything "different": just above the highest score
        return float(np.nextafter(thresholds[1], np.inf))
    if best + 1 < len(thresholds):
        return float((thresholds[best] + thresholds[best + 1]) / 2)
    return float(np.nextafter(thresholds[best], -np.inf))


def pair_metrics(
    same: np.ndarray, scores: np.ndarray, threshold: float, probabilities: bool = False
) -> dict:
    """Accuracy at ``threshold``, ROC AUC, per-class precision/recall and confusion matrix.

    With ``probabilities`` (siamese sigmoid outputs) the binary cross-entropy ``loss`` is added.
    """
    same, scores = _check_scores(same, scores)
    predicted = (scores >= threshold).astype(int)
    labels = [0, 1]
    report = classification_report(
        same, predicted, labels=labels, target_names=CLASSES, output_dict=True, zero_division=0
    )
    metrics = {
        "n": len(same),
        "accuracy": accuracy_score(same, predicted),
        "auc": roc_auc_score(same, scores) if len(set(same.tolist())) == 2 else math.nan,
        "threshold": float(threshold),
        "per_class": {
            name: {
                "precision": report[name]["precision"],
                "recall": report[name]["recall"],
                "f1": report[name]["f1-score"],
                "support": int(report[name]["support"]),
            }
            for name in CLASSES
        },
        "confusion_matrix": confusion_matrix(same, predicted, labels=labels),
        "report_text": classification_report(
            same, predicted, labels=labels, target_names=CLASSES, digits=3, zero_division=0
        ),
    }
    if probabilities:
        metrics["loss"] = log_loss(same, np.clip(scores, 1e-7, 1 - 1e-7), labels=labels)
    return evaluate._jsonable(metrics)


def score_pairs(
    model: keras.Model, pairs: pd.DataFrame, bank: ImageBank, exp: Experiment
) -> np.ndarray:
    """The model's score for each pair (both images from ``bank``), float64 (N,)."""
    dataset = make_pair_dataset(pairs, bank, exp, training=False, shuffle=False)
    scores = model.predict(dataset.map(lambda ab, _: (ab,)), verbose=0)
    return np.asarray(scores, np.float64).reshape(-1)


class PairValidation(keras.callbacks.Callback):
    """After each epoch: validation AUC (``val_auc``) and, for the embedding network, the accuracy
    at the best validation threshold (``val_accuracy``), added to the epoch's logs."""

    def __init__(self, scorer: keras.Model, pairs: pd.DataFrame, bank: ImageBank, exp: Experiment,
                 accuracy: bool):  # fmt: skip
        super().__init__()
        self.scorer, self.pairs, self.bank, self.exp, self.accuracy = (
            scorer, pairs, bank, exp, accuracy,
        )  # fmt: skip
        self.same = pairs["same"].to_numpy(int)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        scores = score_pairs(self.scorer, self.pairs, self.bank, self.exp)
        logs[MONITOR] = float(roc_auc_score(self.same, scores))
        if self.accuracy:
            threshold = choose_threshold(self.same, scores)
            logs["val_accuracy"] = float(np.mean((scores >= threshold) == self.same))


class TimeBudget(keras.callbacks.Callback):
    """Stop training before an epoch that would end past ``seconds`` (judged by the mean epoch)."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = float(seconds)
        self.start = None
        self.epochs = 0

    def on_train_begin(self, logs=None):
        self.start, self.epochs = time.perf_counter(), 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1
        spent = time.perf_counter() - self.start
        if spent + spent / self.epochs > self.seconds:
            print(f"time budget: stopping after epoch {epoch + 1} ({spent:.0f} s spent)")
            self.model.stop_training = True


def cosine_schedule(lr: float, epochs: int):
    """Per-epoch cosine decay from ``lr`` towards 0 over ``epochs`` (for LearningRateScheduler)."""

    def schedule(epoch: int, current: float) -> float:
        return float(lr * 0.5 * (1 + math.cos(math.pi * min(epoch, epochs) / max(epochs, 1))))

    return schedule


def _callbacks(exp: Experiment, paths: RunPaths, validation: PairValidation, best: float) -> list:
    """Validation AUC, best checkpoint, CSV history, resume, and the optional schedules."""
    callbacks = [
        validation,  # first: the callbacks below read val_auc from the same logs
        keras.callbacks.ModelCheckpoint(
            paths.work / "best.keras",
            monitor=MONITOR,
            mode="max",
            save_best_only=True,
            initial_value_threshold=best if np.isfinite(best) else None,
        ),
        keras.callbacks.CSVLogger(paths.work / "history.csv", append=True),
        keras.callbacks.BackupAndRestore(paths.work / "backup"),
    ]
    if exp.early_stopping:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=MONITOR, mode="max", patience=exp.early_stopping)
        )
    schedule = knob(exp, "lr_schedule")
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule {schedule!r} unknown; choose one of {LR_SCHEDULES}")
    if schedule == "cosine":
        callbacks.append(keras.callbacks.LearningRateScheduler(cosine_schedule(exp.lr, exp.epochs)))
    elif schedule == "plateau" or exp.reduce_lr:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=MONITOR, mode="max", patience=max(exp.reduce_lr, 1), factor=0.5
            )
        )
    if knob(exp, "time_budget_s"):
        callbacks.append(TimeBudget(knob(exp, "time_budget_s")))
    return callbacks


def _resume_state(paths: RunPaths) -> tuple[bool, float]:
    """Whether an interrupted run is there to resume, and its best validation AUC so far."""
    history = paths.work / "history.csv"
    if not (paths.work / "backup").exists():
        history.unlink(missing_ok=True)  # a finished or new run starts its history afresh
        (paths.work / "best.keras").unlink(missing_ok=True)
        return False, -np.inf
    if history.is_file() and history.stat().st_size:
        past = pd.read_csv(history)
        if MONITOR in past and len(past):
            return True, float(past[MONITOR].max())
    return True, -np.inf


def _flatten_pairs(ab, ids):
    """((a, b), (B, 2) ids) -> (2B images, 2B ids): the embedding network learns from single faces."""
    import tensorflow as tf

    return tf.concat([ab[0], ab[1]], axis=0), tf.concat([ids[:, 0], ids[:, 1]], axis=0)


def fit_verification(
    exp: Experiment,
    splits: Mapping[str, pd.DataFrame],
    bank: ImageBank,
    paths: RunPaths,
    verbose: int | str = 2,
) -> tuple[keras.Model, pd.DataFrame]:
    """Build, compile and fit the pair model (resuming an interrupted run); returns the best one."""
    train, val = splits["train"], splits["val"]
    embedding = exp.model == "embedding"
    if embedding:
        net = siamese.embedding_tower_from_experiment(exp)
        scorer = siamese.build_embedding_scorer(net)
        loss = siamese.embedding_loss(
            knob(exp, "loss"), temperature=knob(exp, "temperature"), margin=knob(exp, "margin")
        )
        train_ds = make_pair_dataset(train, bank, exp, training=True, target="ids")
        val_ds = make_pair_dataset(val, bank, exp, training=False, target="ids")
        train_ds, val_ds = train_ds.map(_flatten_pairs), val_ds.map(_flatten_pairs)
        metrics = []
    else:
        net = scorer = siamese.siamese_from_experiment(exp)
        loss = keras.losses.BinaryCrossentropy(label_smoothing=knob(exp, "label_smoothing"))
        train_ds = make_pair_dataset(train, bank, exp, training=True)
        val_ds = make_pair_dataset(val, bank, exp, training=False)
        metrics = ["accuracy"]
    net.compile(
        optimizer=make_optimizer(exp), loss=loss, metrics=metrics, jit_compile=exp.jit_compile
    )
    resuming, best = _resume_state(paths)
    if resuming:
        print(f"resuming {exp.stem} from its last finished epoch")
    validation = PairValidation(scorer, val, bank, exp, accuracy=embedding)
    net.fit(
        train_ds,
        validation_data=val_ds,
        epochs=exp.epochs,
        verbose=verbose,
        shuffle=False,  # the pair dataset shuffles itself (seeded)
        callbacks=_callbacks(exp, paths, validation, best),
    )
    if (paths.work / "best.keras").exists():
        net = keras.models.load_model(paths.work / "best.keras", compile=False)
    history = pd.read_csv(paths.work / "history.csv") if exp.epochs else pd.DataFrame()
    model = siamese.build_embedding_scorer(net) if embedding else net
    return model, history


def run_verification(exp: Experiment, command: str = "", verbose: int | str = 2) -> dict:
    """Train, choose the threshold on validation, evaluate, predict and plot one verification run.

    Returns the run card (also written to ``models/<stem>.json``).
    """
    if exp.task != "verification":
        raise ValueError(f"run_verification needs task 'verification', got {exp.task!r}")
    if exp.model not in MODELS:
        raise ValueError(f"verification model {exp.model!r} unknown; choose one of {MODELS}")
    if not exp.pairs:
        raise ValueError(
            "no pairs folder given; pass --pairs DIR (pairsDevTrain.txt, pairsDevTest.txt, lfw/)"
        )
    unknown = sorted(set(exp.extra) - set(EXTRA_DEFAULTS) - {"filters", "kernels", "embedding_dim"})
    if unknown:
        raise ValueError(
            f"unknown verification settings {unknown} in extra; known: "
            f"{sorted(EXTRA_DEFAULTS) + ['embedding_dim', 'filters', 'kernels']}"
        )
    task = get_task(exp.task)
    keras.utils.set_random_seed(exp.seed)
    start = time.perf_counter()
    splits = verification_splits(
        read_lfw_pairs(exp.pairs, "train"),
        read_lfw_pairs(exp.pairs, "test"),
        val_fraction=knob(exp, "val_fraction"),
        train_size=int(knob(exp, "train_pairs")),
        val_size=int(knob(exp, "val_pairs")),
        seed=exp.seed,
    )
    paths = RunPaths(exp)
    paths.make()
    log = SkipLog()
    all_pairs = pd.concat(splits.values(), ignore_index=True)
    bank = ImageBank(pd.concat([all_pairs["path_a"], all_pairs["path_b"]]), exp.image_size, log)
    splits = {name: bank.usable(frame) for name, frame in splits.items()}
    people = {name: len(set(f["person_a"]) | set(f["person_b"])) for name, f in splits.items()}
    print(
        f"run {exp.stem}: pairs "
        + ", ".join(f"{k} {len(v)} ({people[k]} people)" for k, v in splits.items())
        + f"; {exp.epochs} epochs, {exp.model} at {exp.image_size}px"
    )
    fit_start = time.perf_counter()
    model, history = fit_verification(exp, splits, bank, paths, verbose)
    train_seconds = time.perf_counter() - fit_start
    save_model(model, paths)

    scores = {name: score_pairs(model, frame, bank, exp) for name, frame in splits.items()}
    threshold = choose_threshold(splits["val"]["same"].to_numpy(), scores["val"])
    probabilities = exp.model == "siamese"
    metrics = {
        name: pair_metrics(splits[name]["same"].to_numpy(), scores[name], threshold, probabilities)
        for name in ("train", "val", "test")
    }
    predictions = pd.concat(
        [
            frame[["split", "source", "person_a", "person_b", "path_a", "path_b", "same"]].assign(
                score=np.round(scores[name], 6),
                same_predicted=(scores[name] >= threshold).astype(int),
            )
            for name, frame in splits.items()
        ],
        ignore_index=True,
    )
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
        "threshold": threshold,
        "score": "probability" if probabilities else "cosine",
        "pairs": {name: len(frame) for name, frame in splits.items()},
        "people": people,
        "metrics": metrics,
    }
    atomic_write_text(json.dumps(card, indent=2, default=_json_default), paths.card)
    append_result(evaluate.results_row(card), paths.results)
    if not history.empty:
        plots.plot_history(history, paths.history_plot, exp.stem)
    plot_roc(
        {name: (splits[name]["same"].to_numpy(), scores[name]) for name in ("val", "test")},
        threshold,
        roc_plot_path(paths),
        f"{exp.stem}: ROC (threshold {threshold:.3f} from validation)",
    )
    test = predictions[predictions["split"] == "test"]
    plot_hardest_pairs(
        test, threshold, exp.image_size, pairs_plot_path(paths), f"{exp.stem}: hardest test pairs"
    )
    log.write_next_to(paths.card)
    shutil.rmtree(paths.work, ignore_errors=True)
    _print_summary(card, paths)
    return card


def metrics_table(card: Mapping) -> pd.DataFrame:
    """Pairs, accuracy at the validation threshold and ROC AUC of each split of a run card."""
    return pd.DataFrame(
        {
            split: {"pairs": m["n"], "accuracy": m["accuracy"], "auc": m["auc"]}
            for split, m in card["metrics"].items()
        }
    ).T.round(4)


def roc_plot_path(paths: RunPaths) -> Path:
    """``plots/<stem>_roc.png``."""
    return paths.plots / f"{paths.card.stem}_roc.png"


def pairs_plot_path(paths: RunPaths) -> Path:
    """``plots/<stem>_pairs.png``: the hardest test pairs."""
    return paths.plots / f"{paths.card.stem}_pairs.png"


def plot_roc(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    threshold: float,
    path: str | os.PathLike,
    title: str,
):
    """ROC curve of each named (same, scores), AUC in the legend, the threshold's point marked."""
    from facelab.plots import _figure, _save, _style

    with _style():
        fig = _figure(5.5, 5.0)
        ax = fig.subplots()
        for name, (same, scores) in curves.items():
            same, scores = _check_scores(same, scores)
            fpr, tpr, _ = roc_curve(same, scores)
            predicted = scores >= threshold
            point = (predicted[same == 0].mean(), predicted[same == 1].mean())
            (line,) = ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(same, scores):.3f})")
            ax.plot(*point, "o", color=line.get_color())
        ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1)
        ax.set_xlabel("false positive rate (different people called same)")
        ax.set_ylabel("true positive rate (same person called same)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.legend(loc="lower right", title=f"o: threshold {threshold:.3f}")
        fig.suptitle(title)
        _save(fig, path)
    return fig


def hardest_pairs(predictions: pd.DataFrame, n: int = HARDEST_PAIRS) -> pd.DataFrame:
    """The ``n`` pairs scored furthest on the wrong side: matched pairs with the lowest scores and
    mismatched pairs with the highest, half each."""
    matched = predictions[predictions["same"] == 1].nsmallest(n - n // 2, "score")
    mismatched = predictions[predictions["same"] == 0].nlargest(n // 2, "score")
    return pd.concat([matched, mismatched], ignore_index=True)


def plot_hardest_pairs(
    predictions: pd.DataFrame,
    threshold: float,
    image_size: int,
    path: str | os.PathLike,
    title: str,
    n: int = HARDEST_PAIRS,
):
    """A grid of the hardest pairs, both faces side by side, with truth, score and decision."""
    from facelab.plots import RIGHT_COLOUR, WRONG_COLOUR, _figure, _save, _show_image, _style

    chosen = hardest_pairs(predictions, n)
    if chosen.empty:
        raise ValueError("no pairs to plot: the predictions frame is empty")
    per_row = 2
    rows = math.ceil(len(chosen) / per_row)
    with _style():
        fig = _figure(2.2 * 2 * per_row, 2.5 * rows + 0.4)
        axes = fig.subplots(rows, 2 * per_row, squeeze=False)
        for ax in axes.ravel():
            ax.set_axis_off()
        for k, pair in enumerate(chosen.itertuples(index=False)):
            left, right = (
                axes[k // per_row, 2 * (k % per_row)],
                axes[k // per_row, 2 * (k % per_row) + 1],
            )
            for ax, image_path in ((left, pair.path_a), (right, pair.path_b)):
                _show_image(ax, read_image(image_path, image_size))
            decided = "same" if pair.score >= threshold else "different"
            truth = "same" if pair.same else "different"
            colour = RIGHT_COLOUR if decided == truth else WRONG_COLOUR
            left.set_title(
                f"{truth}: score {pair.score:.3f} -> {decided}", color=colour, loc="left"
            )
        fig.suptitle(f"{title} (threshold {threshold:.3f})")
        _save(fig, path)
    return fig


# -- python -m facelab verify ---------------------------------------------------------------------


def read_pair_list(path: str | os.PathLike) -> pd.DataFrame:
    """A tab-separated ``path_a path_b [same]`` file -> ``path_a, path_b[, same]``.

    Relative paths are taken from the file's own folder; ``same`` is 1/0, same/different or
    true/false. Blank lines and lines starting with ``#`` are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: pairs list not found; pass a TSV of 'path_a<TAB>path_b[<TAB>same]'"
        )
    rows, with_same = [], None
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in text.split("\t")]
        if len(fields) not in (2, 3):
            raise ValueError(
                f"{path}, line {number}: expected 'path_a<TAB>path_b[<TAB>same]', got {len(fields)} "
                "tab-separated fields"
            )
        if number == 1 and fields[:2] == ["path_a", "path_b"]:
            continue  # a header line
        if with_same is None:
            with_same = len(fields) == 3
        elif with_same != (len(fields) == 3):
            raise ValueError(f"{path}, line {number}: give 'same' on every line or on none")
        row = [str(_resolve(path.parent, f)) for f in fields[:2]]
        if with_same:
            row.append(_same_value(path, number, fields[2]))
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no pairs in the file")
    return pd.DataFrame(rows, columns=["path_a", "path_b", "same"][: len(rows[0])])


def load_threshold(model_path: str | os.PathLike, threshold: float | None = None) -> float:
    """The decision threshold: given, or the one the run card beside the model chose on validation."""
    if threshold is not None:
        return float(threshold)
    card = Path(model_path).with_suffix(".json")
    if card.is_file():
        values = json.loads(card.read_text())
        if "threshold" in values:
            return float(values["threshold"])
    raise ValueError(
        f"{model_path}: no run card {card.name} with a threshold beside it; pass --threshold T"
    )


def verify_pairs(
    model: keras.Model,
    path_a: Sequence[str],
    path_b: Sequence[str],
    threshold: float,
    batch_size: int = 32,
    skip_log: SkipLog | None = None,
) -> pd.DataFrame:
    """Score pairs of image files: ``path_a, path_b, score, same_predicted`` (1 = same person).

    Pairs with an unreadable image are left out (and recorded in ``skip_log``).
    """
    image_size = int(model.input_shape[0][1])
    pairs = pd.DataFrame(
        {"path_a": list(map(os.fspath, path_a)), "path_b": list(map(os.fspath, path_b))}
    )
    pairs["same"] = 0  # placeholder target of the pair dataset
    bank = ImageBank(
        pd.concat([pairs["path_a"], pairs["path_b"]]), image_size, skip_log, batch_size
    )
    usable = bank.usable(pairs)
    exp = Experiment(task="verification", image_size=image_size, batch_size=batch_size)
    scores = score_pairs(model, usable, bank, exp) if len(usable) else np.zeros(0)
    return pd.DataFrame(
        {
            "path_a": usable["path_a"],
            "path_b": usable["path_b"],
            "score": np.round(scores, 6),
            "same_predicted": (scores >= threshold).astype(int),
        }
    )


def verify_command(args) -> int:
    """`python -m facelab verify MODEL IMG_A IMG_B` or `... MODEL --pairs TSV --out CSV`."""
    from facelab.predict import load_model_file

    if args.pairs and args.images:
        raise ValueError("pass either two images or --pairs TSV, not both")
    if not args.pairs and len(args.images) != 2:
        raise ValueError(
            f"pass two images to compare (got {len(args.images)}), or --pairs TSV --out CSV"
        )
    if args.pairs and not args.out:
        raise ValueError("--pairs needs --out CSV for the scores")
    threshold = load_threshold(args.model, args.threshold)
    model = load_model_file(args.model)
    if not (isinstance(model.input_shape, list) and len(model.input_shape) == 2):
        raise ValueError(
            f"{args.model}: not a verification model (it takes one image, not a pair); "
            "pass a model trained with --task verification"
        )
    log = SkipLog()
    if not args.pairs:
        for image in args.images:
            read_image(image)  # a clear error naming the file, before any work
        frame = verify_pairs(model, [args.images[0]], [args.images[1]], threshold, 1, log)
        score = float(frame["score"].iloc[0])
        decision = "same person" if score >= threshold else "different people"
        print(f"score {score:.4f} -> {decision} (threshold {threshold:.4f})")
        return 0
    listed = read_pair_list(args.pairs)
    frame = verify_pairs(model, listed["path_a"], listed["path_b"], threshold, args.batch_size, log)
    if "same" in listed:
        same = dict(
            zip(zip(listed["path_a"], listed["path_b"], strict=True), listed["same"], strict=True)
        )
        frame["same"] = [
            same[(a, b)] for a, b in zip(frame["path_a"], frame["path_b"], strict=True)
        ]
    out = atomic_write_csv(frame, args.out)
    skipped = log.write_next_to(out)
    summary = f"wrote {len(frame)} pair scores to {out} (threshold {threshold:.4f})"
    if "same" in frame and len(frame):
        summary += f"; accuracy {np.mean(frame['same'] == frame['same_predicted']):.4f}"
    print(summary + (f"; skipped {len(log)}: {skipped}" if skipped else ""))
    return 0


def _resolve(folder: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else folder / path


def _same_value(path: Path, line: int, text: str) -> int:
    value = text.strip().lower()
    if value in ("1", "same", "true", "yes"):
        return 1
    if value in ("0", "different", "false", "no"):
        return 0
    raise ValueError(
        f"{path}, line {line}: 'same' must be 1/0, same/different or true/false, got {text!r}"
    )


def _check_scores(same, scores) -> tuple[np.ndarray, np.ndarray]:
    same = np.asarray(same).astype(int).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(same) != len(scores):
        raise ValueError(
            f"Found input variables with inconsistent numbers of samples: [{len(same)}, "
            f"{len(scores)}] (same, scores)"
        )
    if not len(same):
        raise ValueError("no pairs to evaluate: same and scores are empty")
    if not np.isin(same, (0, 1)).all():
        raise ValueError("same must hold only 0 (different people) and 1 (same person)")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite numbers; the model returned NaN or infinity")
    return same, scores


def _best_epoch(history: pd.DataFrame) -> int | None:
    if history.empty or MONITOR not in history:
        return None
    return int(history.loc[history[MONITOR].idxmax(), "epoch"]) + 1


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _print_summary(card: dict, paths: RunPaths) -> None:
    parts = [
        f"{split} acc {m['accuracy']:.4f} AUC {m['auc']:.4f}"
        for split, m in card["metrics"].items()
    ]
    print(
        f"{card['stem']}: "
        + " | ".join(parts)
        + f" (threshold {card['threshold']:.4f} from validation; {card['wall_time_s']:.0f} s)"
    )
    print(f"  model  {paths.keras}  (+ .h5, run card {paths.card.name})")
    print(
        f"  plots  {paths.history_plot}, {roc_plot_path(paths).name}, {pairs_plot_path(paths).name}"
    )
    print(f"  preds  {paths.predictions_csv}")
