"""The gender and attribute notebooks run headless (papermill) on the embedded data."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from facelab.data.synthetic import render_celeba
from facelab.data.synthetic_adience import render_adience
from tests.test_notebooks import run


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("nb_gender")
    render_celeba(root / "celeba-synth", n=120, seed=2, identities=24, progress=False)
    render_adience(root / "adience-synth", n=120, seed=2, progress=False)
    return root


# Without pretrained weights a whole MobileNetV2 trains, and tracing the update of its 300-odd
# variables is most of a tiny run; the tests freeze the base, as ImageNet weights would, and unfreeze
# its top layers for fine-tuning.


def test_the_mobilenetv2_notebook_pretrains_on_celeba_and_fine_tunes_on_adience(data):
    out = data / "mobilenet"
    run("gender_MobileNetV2.ipynb", data, CELEBA_DIR=str(data / "celeba-synth"),
        ADIENCE_DIR=str(data / "adience-synth"), OUTPUT_DIR=str(out), RUN="nb", WEIGHTS=None,
        IMAGE_SIZE=32, BATCH_SIZE=16, EPOCHS=1, FINE_TUNE_EPOCHS=1, LR_FINDER_STEPS=8,
        TEST_FOLD=1, EXTRA={"head": "gender", "freeze_base": True}, FINE_TUNE_LAYERS=10)  # fmt: skip
    stages = pd.read_csv(out / "models/gender_mobilenetv2_nb_adience_stages.csv")
    assert list(stages["stage"]) == ["gender_mobilenetv2_nb", "gender_mobilenetv2_nb_adience"]
    assert {"gender_celeba_nb", "gender_adience_nb"} <= set(stages.columns)
    assert stages[["gender_celeba_nb", "gender_adience_nb"]].notna().all().all()
    card = json.loads((out / "models/gender_mobilenetv2_nb_adience.json").read_text())
    assert card["experiment"]["from_run"] == "nb" and card["experiment"]["lr"] == 1e-5
    for rel in ("plots/gender_mobilenetv2_nb_lr_finder.png",
                "plots/gender_mobilenetv2_nb_adience_history.png",
                "predictions/gender_mobilenetv2_nb_adience.csv"):  # fmt: skip
        assert (out / rel).stat().st_size > 0, rel


def test_the_hassner_notebook_trains_on_adience_folds(data):
    out = data / "hassner"
    run("gender_HassnerCNN.ipynb", data, ADIENCE_DIR=str(data / "adience-synth"),
        OUTPUT_DIR=str(out), RUN="nb", IMAGE_SIZE=48, BATCH_SIZE=16, EPOCHS=1, TEST_FOLD=2)  # fmt: skip
    card = json.loads((out / "models/gender_hassnercnn_nb.json").read_text())
    assert card["model"] == "hassnercnn" and card["experiment"]["image_size"] == 48
    frame = pd.read_csv(out / "data/gender_adience_fold2_nb.csv")
    assert set(frame.loc[frame["split"] == "test", "fold"]) == {2}
    assert (out / "plots/gender_hassnercnn_nb_confusion.png").stat().st_size > 0


def test_the_attributes_notebook_trains_all_40_attributes(data):
    out = data / "attributes"
    # Through the MODEL knob with FromScratch: the 40 outputs, their metrics and plot are the
    # subject here; the MobileNetV2 transfer path runs in the gender notebook above.
    run("attributes_MobileNetV2.ipynb", data, CELEBA_DIR=str(data / "celeba-synth"),
        OUTPUT_DIR=str(out), RUN="nb", MODEL="fromscratch", WEIGHTS=None, IMAGE_SIZE=32,
        BATCH_SIZE=16, EPOCHS=1)  # fmt: skip
    card = json.loads((out / "models/attributes_fromscratch_nb.json").read_text())
    assert len(card["metrics"]["test"]["per_attribute"]) == 40
    preds = pd.read_csv(out / "predictions/attributes_fromscratch_nb.csv")
    assert sum(c.startswith("p_") for c in preds.columns) == 40
    assert (out / "plots/attributes_fromscratch_nb_attributes.png").stat().st_size > 0
