"""The 40-attribute multi-label task: subsets, balanced weights, per-attribute outputs, timing."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest

from facelab.__main__ import main
from facelab.config import Experiment
from facelab.data import sources
from facelab.data.manifest import write_manifest
from facelab.data.split import split_frame
from facelab.data.synthetic import render_celeba
from facelab.losses import WeightedBinaryCrossentropy
from facelab.tasks import get_task
from facelab.train import class_weights, run_experiment

SUBSET = ["Male", "Smiling", "Eyeglasses"]


@pytest.fixture(scope="module")
def attributes_manifest(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("attributes")
    render_celeba(root / "celeba", n=120, seed=3, progress=False)
    frame = sources.label_celeba("attributes", root / "celeba")
    frame["split"] = split_frame(frame.assign(label=frame["label"].str.contains("Male")), seed=1)
    return str(write_manifest(frame, root / "attributes.csv"))


def test_a_subset_of_attributes_trains_with_one_output_and_one_column_per_attribute(
    attributes_manifest, tmp_path
):
    exp = Experiment(task="attributes", attributes=SUBSET, class_weight="balanced",
                     manifest=attributes_manifest, output_dir=str(tmp_path), run="s",
                     image_size=32, batch_size=16, epochs=1, optimizer="adam", lr=1e-3)  # fmt: skip
    card = run_experiment(exp, verbose=0)
    stem = "attributes_fromscratch_s"
    assert card["classes"] == SUBSET and card["parameters"] > 0
    test = card["metrics"]["test"]
    assert list(test["per_attribute"]) == SUBSET
    for values in test["per_attribute"].values():
        assert {"accuracy", "balanced_accuracy", "f1", "majority_baseline"} <= set(values)
    assert (tmp_path / f"plots/{stem}_attributes.png").stat().st_size > 0
    preds = pd.read_csv(tmp_path / f"predictions/{stem}.csv")
    assert [c for c in preds.columns if c.startswith("p_")] == [f"p_{a}" for a in SUBSET]
    # labels in the predictions keep only the subset's attributes
    assert all(set(str(v).split("|")) <= set(SUBSET) | {"nan"} for v in preds["label"])
    for key in ("batch_1", "batch_16"):
        speed = card["inference"][key]
        assert speed["images_per_s"] > 0 and speed["ms_per_image"] > 0

    out = tmp_path / "again.csv"
    assert main(["predict", str(tmp_path / f"models/{stem}.keras"), attributes_manifest,
                 "--out", str(out)]) == 0  # fmt: skip
    assert [c for c in pd.read_csv(out).columns if c.startswith("p_")] == [f"p_{a}" for a in SUBSET]
    assert json.loads((tmp_path / f"models/{stem}.json").read_text())["experiment"]["attributes"]


def test_balanced_weights_make_each_value_of_each_attribute_count_the_same():
    targets = np.array([[1, 0], [0, 0], [0, 0], [0, 1]], np.float32)  # 25% and 25% positive
    weights = class_weights(targets, get_task("attributes", ["Male", "Young"]))
    positives, negatives = targets.sum(axis=0), (1 - targets).sum(axis=0)
    np.testing.assert_allclose(weights[1] * positives, weights[0] * negatives)
    single = class_weights(np.eye(3)[[0, 0, 0, 1, 2, 2]], get_task("light"))
    np.testing.assert_allclose(single * [3, 1, 2], 2.0)  # n / k per class


def test_weighted_cross_entropy_with_unit_weights_is_keras_binary_cross_entropy():
    rng = np.random.default_rng(0)
    y_true = (rng.random((8, 5)) > 0.5).astype(np.float32)
    y_pred = rng.uniform(0.05, 0.95, (8, 5)).astype(np.float32)
    ours = WeightedBinaryCrossentropy(np.ones((2, 5)))(y_true, y_pred)
    theirs = keras.losses.BinaryCrossentropy()(y_true, y_pred)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)
    heavy = WeightedBinaryCrossentropy(np.stack([np.ones(5), 3 * np.ones(5)]))(y_true, y_pred)
    assert float(heavy) > float(ours)


def test_a_model_compiled_with_the_weighted_loss_saves_and_loads(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="sigmoid")])
    weights = np.array([[0.6, 0.7, 0.8], [3.0, 2.0, 1.5]], np.float32)
    model.compile(optimizer="adam", loss=WeightedBinaryCrossentropy(weights))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert isinstance(loaded.loss, WeightedBinaryCrossentropy)
    np.testing.assert_allclose(loaded.loss.weights, weights)


def test_unknown_attribute_names_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="are not labels of task 'attributes'"):
        Experiment(task="attributes", attributes=["Male", "Has_Tail"])
    with pytest.raises(ValueError, match="only a multi-label task"):
        Experiment(task="gender", attributes=["Male"])
