"""Metrics of a run checked against numbers worked out by hand on tiny arrays."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from facelab.evaluate import (
    RESULTS_COLUMNS,
    classification_metrics,
    multilabel_metrics,
    results_row,
)

CLASSES = ["left", "center", "right"]
# 5 samples; predictions (argmax): left, center, right, left, center.
Y_TRUE = np.array([0, 1, 2, 2, 1])
Y_PROB = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.1, 0.8, 0.1],
        [0.2, 0.2, 0.6],
        [0.5, 0.1, 0.4],
        [0.3, 0.4, 0.3],
    ]
)


def test_accuracy_confusion_matrix_and_per_class_recall_match_hand_computed():
    m = classification_metrics(Y_TRUE, Y_PROB, CLASSES)
    assert m["n"] == 5
    assert m["accuracy"] == pytest.approx(4 / 5)
    # rows true, columns predicted: one 'right' face was called 'left'
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 2, 0], [1, 0, 1]]
    assert m["per_class"]["left"]["precision"] == pytest.approx(1 / 2)
    assert m["per_class"]["left"]["recall"] == pytest.approx(1.0)
    assert m["per_class"]["right"]["recall"] == pytest.approx(1 / 2)
    assert m["per_class"]["right"]["f1"] == pytest.approx(2 / 3)
    assert m["per_class"]["center"]["support"] == 2
    assert m["macro_avg"]["recall"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["weighted_avg"]["recall"] == pytest.approx(m["accuracy"])
    assert "right" in m["report_text"] and "macro avg" in m["report_text"]


def test_loss_is_mean_negative_log_probability_of_the_true_class():
    m = classification_metrics(Y_TRUE, Y_PROB, CLASSES)
    expected = -np.mean(np.log([0.7, 0.8, 0.6, 0.4, 0.4]))
    assert m["loss"] == pytest.approx(expected)


def test_one_hot_and_index_labels_give_the_same_metrics():
    one_hot = np.eye(3)[Y_TRUE].astype("float32")
    assert classification_metrics(one_hot, Y_PROB, CLASSES) == classification_metrics(
        Y_TRUE, Y_PROB, CLASSES
    )


def test_float32_softmax_output_is_accepted():
    logits = np.random.default_rng(0).normal(size=(7, 3)).astype("float32")
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    m = classification_metrics(np.arange(7) % 3, prob, CLASSES)
    assert 0 <= m["accuracy"] <= 1 and m["loss"] > 0


def test_class_absent_from_labels_still_appears_with_zero_support():
    y_true = np.array([0, 0, 2])
    y_prob = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])
    m = classification_metrics(y_true, y_prob, CLASSES)
    assert m["per_class"]["center"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 0, 0], [0, 0, 1]]
    assert np.isfinite(m["loss"])


def test_metrics_are_json_ready():
    m = classification_metrics(Y_TRUE, Y_PROB, CLASSES)
    assert json.loads(json.dumps(m)) == m


def test_logits_and_mismatched_lengths_are_rejected_with_a_clear_error():
    with pytest.raises(ValueError, match="sum to 1"):
        classification_metrics(Y_TRUE, Y_PROB * 3, CLASSES)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        classification_metrics(Y_TRUE[:4], Y_PROB, CLASSES)
    with pytest.raises(ValueError, match="3 classes"):
        classification_metrics(Y_TRUE, Y_PROB[:, :2], CLASSES)
    with pytest.raises(ValueError, match="outside 0..2"):
        classification_metrics(np.array([0, 1, 2, 3, 1]), Y_PROB, CLASSES)


def test_multilabel_per_attribute_numbers_and_majority_baseline():
    y_true = np.array([[1, 0], [1, 0], [0, 0], [1, 1]])
    y_prob = np.array([[0.9, 0.2], [0.4, 0.1], [0.2, 0.3], [0.7, 0.6]])
    m = multilabel_metrics(y_true, y_prob, ["Smiling", "Bald"])
    smiling, bald = m["per_attribute"]["Smiling"], m["per_attribute"]["Bald"]
    # Smiling: predicted 1,0,0,1 vs 1,1,0,1 -> one miss among 3 positives.
    assert smiling["accuracy"] == pytest.approx(3 / 4)
    assert smiling["positive_rate"] == pytest.approx(3 / 4)
    assert smiling["majority_baseline"] == pytest.approx(3 / 4)
    assert smiling["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert smiling["f1"] == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    # Bald: one positive, predicted exactly.
    assert bald["accuracy"] == 1.0
    assert bald["majority_baseline"] == pytest.approx(3 / 4)
    assert bald["f1"] == 1.0
    assert m["mean_accuracy"] == pytest.approx((3 / 4 + 1) / 2)
    assert m["accuracy"] == m["mean_accuracy"]
    assert m["mean_majority_baseline"] == pytest.approx(3 / 4)
    p = np.clip(y_prob, 1e-15, 1 - 1e-15)
    bce = -np.mean(y_true * np.log(p) + (1 - y_true) * np.log(1 - p))
    assert m["loss"] == pytest.approx(bce)
    assert json.loads(json.dumps(m)) == m


def test_multilabel_attribute_absent_everywhere_does_not_crash():
    y_true = np.zeros((3, 1), dtype=int)
    m = multilabel_metrics(y_true, np.array([[0.1], [0.6], [0.2]]), ["Bald"])
    bald = m["per_attribute"]["Bald"]
    assert bald["accuracy"] == pytest.approx(2 / 3)
    assert bald["f1"] == 0.0
    assert bald["majority_baseline"] == 1.0


def _card(splits=("train", "val", "test")):
    metrics = {
        "train": {"accuracy": 0.95, "loss": 0.15},
        "val": {"accuracy": 0.9, "loss": 0.25},
        "test": {"accuracy": 0.88, "loss": 0.3},
    }
    return {
        "stem": "orientation_fromscratch_try1",
        "task": "orientation",
        "model": "fromscratch",
        "run": "try1",
        "date": "2025-01-02T03:04:05",
        "experiment": {
            "optimizer": "adabound",
            "lr": 0.005,
            "batch_size": 16,
            "image_size": 128,
            "augment": True,
            "task": "orientation",
            "model": "fromscratch",
            "run": "try1",
        },
        "command": "python -m facelab train ...",
        "epochs_run": 15,
        "best_epoch": 12,
        "wall_time_s": 123.4,
        "metrics": {s: metrics[s] for s in splits},
    }


def test_results_row_flattens_a_run_card_in_column_order():
    row = results_row(_card())
    assert tuple(row) == RESULTS_COLUMNS
    assert row["stem"] == "orientation_fromscratch_try1"
    assert row["test_accuracy"] == 0.88 and row["val_loss"] == 0.25
    assert row["optimizer"] == "adabound" and row["lr"] == 0.005 and row["augment"] is True
    assert row["epochs_run"] == 15 and row["best_epoch"] == 12


def test_results_row_without_test_split_has_nan_test_numbers():
    row = results_row(_card(splits=("train", "val")))
    assert math.isnan(row["test_accuracy"]) and math.isnan(row["test_loss"])
    assert row["val_accuracy"] == 0.9


def test_results_row_reads_a_card_of_real_metrics():
    card = _card()
    card["metrics"]["test"] = classification_metrics(Y_TRUE, Y_PROB, CLASSES)
    assert results_row(card)["test_accuracy"] == pytest.approx(0.8)


def test_modules_do_not_import_tensorflow():
    code = (
        "import sys, facelab.evaluate, facelab.plots; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
