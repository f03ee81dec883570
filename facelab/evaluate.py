"""Evaluation metrics of a run: accuracy, loss, classification report, confusion matrix.

Functions take numpy arrays (labels and predicted probabilities) and return JSON-ready dicts,
so the run card, a notebook cell and a test all read the same numbers. No TensorFlow here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    log_loss,
)

SPLITS = ("train", "val", "test")

#: Columns of ``models/results.csv``, in order (one row per run, see :func:`results_row`).
RESULTS_COLUMNS = (
    "stem",
    "task",
    "model",
    "run",
    "date",
    "epochs_run",
    "best_epoch",
    "wall_time_s",
    "train_accuracy",
    "train_loss",
    "val_accuracy",
    "val_loss",
    "test_accuracy",
    "test_loss",
    "optimizer",
    "lr",
    "batch_size",
    "image_size",
    "augment",
)

# Rows of predicted probabilities may be off 1 by float32 rounding, never by more.
_SUM_TOLERANCE = 1e-3


def classification_metrics(
    y_true: np.ndarray, y_prob: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, cross-entropy loss, per-class precision/recall/F1, averages and confusion matrix.

    ``y_true`` holds class indices (N,) or one-hot rows (N, C); ``y_prob`` is (N, C) softmax output.
    """
    classes = [str(c) for c in classes]
    y_prob = _check_probabilities(y_prob, len(classes), "y_prob")
    y_true = _class_indices(y_true, len(classes), len(y_prob))
    labels = list(range(len(classes)))
    y_pred = y_prob.argmax(axis=1)

    report = classification_report(
        y_true, y_pred, labels=labels, target_names=classes, output_dict=True, zero_division=0
    )
    text = classification_report(
        y_true, y_pred, labels=labels, target_names=classes, digits=3, zero_division=0
    )
    per_class = {
        name: {
            "precision": report[name]["precision"],
            "recall": report[name]["recall"],
            "f1": report[name]["f1-score"],
            "support": int(report[name]["support"]),
        }
        for name in classes
    }
    averages = {
        key.split()[0]: {
            "precision": report[key]["precision"],
            "recall": report[key]["recall"],
            "f1": report[key]["f1-score"],
            "support": int(report[key]["support"]),
        }
        for key in ("macro avg", "weighted avg")
    }
    return _jsonable(
        {
            "n": len(y_true),
            "classes": classes,
            "accuracy": accuracy_score(y_true, y_pred),
            "loss": log_loss(y_true, y_prob, labels=labels),
            "per_class": per_class,
            "macro_avg": averages["macro"],
            "weighted_avg": averages["weighted"],
            "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels),
            "report_text": text,
        }
    )


def multilabel_metrics(
    y_true: np.ndarray, y_prob: np.ndarray, names: Sequence[str], threshold: float = 0.5
) -> dict[str, Any]:
    """Per-attribute accuracy, balanced accuracy, F1, positive rate and majority baseline, and means.

    ``y_true`` is (N, A) of 0/1, ``y_prob`` (N, A) sigmoid outputs; a probability >= ``threshold``
    predicts the attribute. ``loss`` is the binary cross-entropy averaged over samples and attributes.
    """
    names = [str(n) for n in names]
    y_prob = np.asarray(y_prob, dtype=np.float64)
    y_true = np.asarray(y_true)
    if y_prob.ndim != 2 or y_prob.shape[1] != len(names):
        raise ValueError(
            f"y_prob must have shape (n_samples, {len(names)}) for {len(names)} attributes, "
            f"got {y_prob.shape}"
        )
    if y_true.shape != y_prob.shape:
        raise ValueError(
            f"y_true and y_prob must have the same shape, got {y_true.shape} and {y_prob.shape}"
        )
    if len(y_prob) == 0:
        raise ValueError("no samples to evaluate: y_true and y_prob are empty")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1 (attribute absent / present)")
    if not np.isfinite(y_prob).all() or y_prob.min() < 0 or y_prob.max() > 1:
        raise ValueError("y_prob must hold probabilities in [0, 1] (sigmoid outputs, not logits)")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold}")

    y_true = y_true.astype(int)
    y_pred = (y_prob >= threshold).astype(int)
    per_attribute = {}
    for j, name in enumerate(names):
        t, p = y_true[:, j], y_pred[:, j]
        positive_rate = float(t.mean())
        with warnings.catch_warnings():
            # One class only in y_true: sklearn warns, the score is still the recall of that class.
            warnings.simplefilter("ignore", UserWarning)
            balanced = balanced_accuracy_score(t, p)
        per_attribute[name] = {
            "accuracy": accuracy_score(t, p),
            "balanced_accuracy": balanced,
            "f1": f1_score(t, p, labels=[0, 1], zero_division=0),
            "positive_rate": positive_rate,
            "predicted_positive_rate": float(p.mean()),
            "majority_baseline": max(positive_rate, 1.0 - positive_rate),
            "loss": log_loss(t, y_prob[:, j], labels=[0, 1]),
        }
    keys = ("accuracy", "balanced_accuracy", "f1", "majority_baseline", "loss")
    means = {f"mean_{k}": float(np.mean([m[k] for m in per_attribute.values()])) for k in keys}
    return _jsonable(
        {
            "n": len(y_true),
            "threshold": threshold,
            "accuracy": means["mean_accuracy"],  # = Keras binary_accuracy
            "loss": means["mean_loss"],  # = Keras binary_crossentropy
            **means,
            "per_attribute": per_attribute,
        }
    )


def results_row(card: Mapping[str, Any]) -> dict[str, Any]:
    """The flat row of ``models/results.csv`` for one run card; a missing split's numbers are NaN."""
    experiment = card.get("experiment") or {}
    metrics = card.get("metrics") or {}
    row: dict[str, Any] = {
        "stem": card.get("stem", ""),
        "task": card.get("task", experiment.get("task", "")),
        "model": card.get("model", experiment.get("model", "")),
        "run": card.get("run", experiment.get("run", "")),
        "date": card.get("date", ""),
        "epochs_run": card.get("epochs_run", math.nan),
        "best_epoch": card.get("best_epoch", math.nan),
        "wall_time_s": card.get("wall_time_s", math.nan),
    }
    for split in SPLITS:
        split_metrics = metrics.get(split) or {}
        for name in ("accuracy", "loss"):
            value = split_metrics.get(name)
            row[f"{split}_{name}"] = math.nan if value is None else float(value)
    for name in ("optimizer", "lr", "batch_size", "image_size", "augment"):
        row[name] = experiment.get(name, math.nan)
    if row["run"] is None:
        row["run"] = ""
    return {column: row[column] for column in RESULTS_COLUMNS}


def _check_probabilities(y_prob: np.ndarray, n_classes: int, name: str) -> np.ndarray:
    """(N, C) float64 probabilities whose rows sum to 1; a clear error otherwise."""
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_prob.ndim != 2 or y_prob.shape[1] != n_classes:
        raise ValueError(
            f"{name} must have shape (n_samples, {n_classes}) for {n_classes} classes, "
            f"got {y_prob.shape}"
        )
    if len(y_prob) == 0:
        raise ValueError("no samples to evaluate: y_true and y_prob are empty")
    if not np.isfinite(y_prob).all() or y_prob.min() < 0:
        raise ValueError(f"{name} must hold probabilities >= 0 (softmax outputs, not logits)")
    sums = y_prob.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > _SUM_TOLERANCE)
    if bad.size:
        raise ValueError(
            f"{name} rows must sum to 1 (softmax outputs, not logits); row {bad[0]} sums to "
            f"{sums[bad[0]]:.4f}"
        )
    return y_prob / sums[:, None]


def _class_indices(y_true: np.ndarray, n_classes: int, n_samples: int) -> np.ndarray:
    """Class indices (N,) from indices or one-hot rows, checked against the class count."""
    y_true = np.asarray(y_true)
    if y_true.ndim == 2:
        if y_true.shape[1] != n_classes:
            raise ValueError(
                f"one-hot y_true must have {n_classes} columns, one per class, got {y_true.shape}"
            )
        y_true = y_true.argmax(axis=1)
    elif y_true.ndim != 1:
        raise ValueError(f"y_true must be (N,) class indices or (N, C) one-hot, got {y_true.shape}")
    if len(y_true) != n_samples:
        raise ValueError(
            f"Found input variables with inconsistent numbers of samples: "
            f"[{len(y_true)}, {n_samples}] (y_true, y_prob)"
        )
    if not np.issubdtype(y_true.dtype, np.integer):
        if not np.all(np.mod(y_true, 1) == 0):
            raise ValueError("y_true must hold integer class indices (or one-hot rows)")
        y_true = y_true.astype(int)
    if y_true.min() < 0 or y_true.max() >= n_classes:
        raise ValueError(
            f"y_true holds class index {int(y_true.min() if y_true.min() < 0 else y_true.max())}, "
            f"outside 0..{n_classes - 1} for {n_classes} classes"
        )
    return y_true


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays -> Python floats, ints and lists, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value
