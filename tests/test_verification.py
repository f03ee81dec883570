"""Verification models and runs: twin towers, losses, save/load, threshold from validation, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import papermill
import pytest

from facelab.__main__ import main
from facelab.models.siamese import (
    KOCH_DENSE,
    KOCH_FILTERS,
    KOCH_KERNELS,
    BatchHardTripletLoss,
    ContrastiveLoss,
    SupervisedContrastiveLoss,
    build_embedding_scorer,
    build_embedding_tower,
    build_siamese,
)
from facelab.predict import load_model_file
from facelab.verification import (
    choose_threshold,
    pair_metrics,
    run_verification,
    verification_experiment,
)
from tests.conftest import REPO
from tests.test_lfw import make_lfw

SIZE = 24  # model input side: the tiny generated faces are resized to this


@pytest.fixture(scope="module")
def lfw(tmp_path_factory):
    return make_lfw(tmp_path_factory.mktemp("lfw"))


def tiny(model: str, lfw, out, **changes):
    values = dict(pairs=str(lfw), run="t", output_dir=str(out), image_size=SIZE, epochs=2,
                  batch_size=8, lr=3e-3,
                  extra=dict(train_pairs=48, val_pairs=16, val_fraction=0.25, filters=(4, 8),
                             embedding_dim=8))  # fmt: skip
    values.update(changes)
    return verification_experiment(model, **values)


@pytest.fixture(scope="module")
def trained(lfw, tmp_path_factory):
    """One tiny embedding run: (run card, output folder)."""
    out = tmp_path_factory.mktemp("run")
    return run_verification(tiny("embedding", lfw, out), verbose=0), out


def random_pairs(n: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32") for _ in range(2)]


def test_a_verification_run_writes_every_output_named_by_its_stem(trained):
    card, out = trained
    stem = "verification_embedding_t"
    for rel in (f"models/{stem}.keras", f"models/{stem}.h5", f"models/{stem}.json",
                "models/results.csv", f"plots/{stem}_history.png", f"plots/{stem}_roc.png",
                f"plots/{stem}_pairs.png", f"predictions/{stem}.csv"):  # fmt: skip
        assert (out / rel).stat().st_size > 0, rel
    saved = json.loads((out / f"models/{stem}.json").read_text())
    assert saved["threshold"] == card["threshold"] and saved["score"] == "cosine"
    assert set(saved["metrics"]) == {"train", "val", "test"}
    assert 0 <= saved["metrics"]["test"]["auc"] <= 1 and saved["metrics"]["test"]["n"] == 12
    row = pd.read_csv(out / "models/results.csv").iloc[-1]
    assert row["stem"] == stem and row["test_accuracy"] == pytest.approx(
        card["metrics"]["test"]["accuracy"]
    )
    assert not list((out / "models").glob(".*work*")), "work folder left behind"


def test_the_threshold_is_chosen_on_validation_and_applied_to_test(trained):
    card, out = trained
    preds = pd.read_csv(out / "predictions/verification_embedding_t.csv")
    val, test = preds[preds["split"] == "val"], preds[preds["split"] == "test"]
    assert card["threshold"] == pytest.approx(choose_threshold(val["same"], val["score"]), abs=1e-5)
    decided = (test["score"] >= card["threshold"]).astype(int)
    assert (decided == test["same_predicted"]).all()
    assert card["metrics"]["test"]["accuracy"] == pytest.approx((decided == test["same"]).mean())


def test_the_threshold_maximises_validation_accuracy_between_two_scores():
    same = np.array([0, 0, 1, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.35, 0.4, 0.7, 0.9])
    assert choose_threshold(same, scores) == pytest.approx(0.55)  # 5/6 right; 0.3 also 5/6
    metrics = pair_metrics(same, scores, 0.55)
    assert metrics["accuracy"] == pytest.approx(5 / 6)
    assert metrics["per_class"]["same"]["recall"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="matched and mismatched"):
        choose_threshold([1, 1], [0.2, 0.4])


def test_the_siamese_score_is_symmetric_and_a_probability():
    model = build_siamese((SIZE, SIZE, 3), crop=16, filters=(4, 8), kernels=(5, 3), dense_units=8)
    a, b = random_pairs()
    ab, ba = model.predict([a, b], verbose=0), model.predict([b, a], verbose=0)
    np.testing.assert_allclose(ab, ba, rtol=1e-5, atol=1e-6)
    assert ab.shape == (3, 1) and ((ab > 0) & (ab < 1)).all()
    towers = [layer for layer in model.layers if layer.name == "tower"]
    assert len(towers) == 1, "the twins must share one tower (one set of weights)"


def test_the_koch_network_has_the_references_38_9m_parameters():
    model = build_siamese((105, 105, 3), crop=105, filters=KOCH_FILTERS, kernels=KOCH_KERNELS,
                          dense_units=KOCH_DENSE, batchnorm="none", padding="valid")  # fmt: skip
    assert model.count_params() == 38_951_745  # "38.9M": the paper's 105 x 105 grey network


def test_an_image_compared_with_itself_or_its_mirror_scores_one_with_the_embedding_network():
    model = build_embedding_scorer(build_embedding_tower((SIZE, SIZE, 3), 16, (4, 8), 8))
    a, _ = random_pairs()
    np.testing.assert_allclose(model.predict([a, a], verbose=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(model.predict([a, a[:, :, ::-1]], verbose=0), 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", ["siamese", "embedding"])
def test_models_reload_from_keras_and_h5_with_identical_scores(kind, tmp_path):
    if kind == "siamese":
        model = build_siamese((SIZE, SIZE, 3), 16, (4, 8), (5, 3), 8, batchnorm="after")
    else:
        model = build_embedding_scorer(build_embedding_tower((SIZE, SIZE, 3), 16, (4, 8), 8))
    a, b = random_pairs()
    expected = model.predict([a, b], verbose=0)
    for suffix in (".keras", ".h5"):
        model.save(tmp_path / f"m{suffix}")
        loaded = load_model_file(tmp_path / f"m{suffix}")  # safe_mode: no Lambda layers
        np.testing.assert_allclose(
            loaded.predict([a, b], verbose=0), expected, rtol=1e-5, atol=1e-6
        )


def test_embedding_losses_are_lower_when_people_cluster():
    ids = np.array([0, 0, 1, 1, 2, 2])
    centres = np.eye(3, 8)
    clustered = centres[ids] + 0.05 * np.random.default_rng(0).normal(size=(6, 8))
    mixed = centres[[0, 1, 1, 2, 2, 0]]
    for loss in (SupervisedContrastiveLoss(), ContrastiveLoss(), BatchHardTripletLoss()):
        good, bad = float(loss(ids, clustered)), float(loss(ids, mixed))
        assert good < bad, type(loss).__name__
    assert float(BatchHardTripletLoss(margin=0.2)(ids, centres[ids])) == 0.0


def test_verify_prints_the_score_and_the_decision(trained, capsys):
    card, out = trained
    preds = pd.read_csv(out / "predictions/verification_embedding_t.csv")
    pair = preds[preds["split"] == "test"].iloc[0]
    code = main(["verify", str(out / "models/verification_embedding_t.keras"), pair["path_a"], pair["path_b"]])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    decision = "same person" if pair["score"] >= card["threshold"] else "different people"
    assert f"score {pair['score']:.4f}" in printed and decision in printed
    assert f"threshold {card['threshold']:.4f}" in printed


def test_verify_scores_a_pairs_list_into_a_csv(trained, tmp_path, capsys):
    card, out = trained
    preds = pd.read_csv(out / "predictions/verification_embedding_t.csv")
    test = preds[preds["split"] == "test"].head(5)
    listed = tmp_path / "pairs.tsv"
    rows = test[["path_a", "path_b", "same"]].astype(str).agg("\t".join, axis=1)
    listed.write_text("\n".join(rows) + "\n")
    model = out / "models/verification_embedding_t.h5"
    assert (
        main(["verify", str(model), "--pairs", str(listed), "--out", str(tmp_path / "s.csv")]) == 0
    )
    scored = pd.read_csv(tmp_path / "s.csv")
    assert list(scored.columns) == ["path_a", "path_b", "score", "same_predicted", "same"]
    np.testing.assert_allclose(scored["score"], test["score"], atol=1e-4)
    assert scored["same_predicted"].tolist() == test["same_predicted"].tolist()
    assert "accuracy" in capsys.readouterr().out


def test_verify_without_a_run_card_asks_for_a_threshold(trained, tmp_path, capsys):
    _, out = trained
    model = tmp_path / "alone.keras"
    model.write_bytes((out / "models/verification_embedding_t.keras").read_bytes())
    preds = pd.read_csv(out / "predictions/verification_embedding_t.csv")
    image = preds["path_a"].iloc[0]
    assert main(["verify", str(model), image, image]) == 2
    assert "--threshold" in capsys.readouterr().err
    assert main(["verify", str(model), image, image, "--threshold", "0.5"]) == 0
    assert "score 1.0000 -> same person" in capsys.readouterr().out


def test_the_siamese_notebook_trains_and_writes_its_outputs(lfw, tmp_path):
    out = tmp_path / "nb"
    papermill.execute_notebook(
        str(REPO / "notebooks/verification_Siamese.ipynb"), str(tmp_path / "executed.ipynb"),
        parameters=dict(PAIRS_DIR=str(lfw), MODEL="siamese", RUN="nb", OUTPUT_DIR=str(out),
                        IMAGE_SIZE=SIZE, FILTERS=[4, 8], DENSE_UNITS=8, BATCH_SIZE=8, EPOCHS=1,
                        TRAIN_PAIRS=32, VAL_PAIRS=12, VAL_FRACTION=0.25, LABEL_SMOOTHING=0.1,
                        EARLY_STOPPING=2, BATCHNORM="after"),
        kernel_name="python3", progress_bar=False, cwd=str(REPO / "notebooks"),
    )  # fmt: skip
    stem = "verification_siamese_nb"
    for rel in (f"models/{stem}.keras", f"models/{stem}.h5", f"plots/{stem}_roc.png",
                f"plots/{stem}_pairs.png", f"predictions/{stem}.csv"):  # fmt: skip
        assert (out / rel).is_file(), rel
    card = json.loads((out / f"models/{stem}.json").read_text())
    assert card["experiment"]["extra"]["label_smoothing"] == 0.1 and card["score"] == "probability"
    assert "loss" in card["metrics"]["test"]
