"""The transfer notebooks and compare_models run headless (papermill) and write their outputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from facelab.data.synthetic import render_celeba
from facelab.evaluate import RESULTS_COLUMNS
from facelab.models.transfer import get_backbone
from facelab.predict import load_model_file
from tests.test_notebooks import code_and_parameters, run
from tests.test_transfer import batchnorms

# One epoch at 32 px, no download (weights=None), the base frozen as with ImageNet weights
# (training it from scratch would only make the test slower), then phase 2 on its top 10 layers.
# The four transfer notebooks are the same code cells with each task's defaults (tested below), so
# one of them runs, with MobileNetV2 through its MODEL knob. InceptionV3 and ResNet50 are built,
# saved and reloaded in test_transfer.py and trained for real by benchmarks/transfer_synthetic.py;
# training one here (a ~95 MB model checkpointed and saved several times) would add a minute or
# more of the suite's time and no code path.
TRANSFER_NOTEBOOKS = ("orientation_InceptionV3.ipynb", "light_ResNet50.ipynb",
                      "light_InceptionV3.ipynb", "orientation_ResNet50.ipynb")  # fmt: skip


@pytest.fixture(scope="module")
def celeba(tmp_path_factory):
    """60 synthetic faces: every class in every split for orientation and light."""
    folder = tmp_path_factory.mktemp("nb") / "celeba-synth"
    render_celeba(folder, n=60, seed=0, progress=False)
    return folder


def test_a_transfer_notebook_trains_both_phases_and_writes_every_output(celeba):
    task, model, notebook, size = "orientation", "mobilenetv2", "orientation_ResNet50.ipynb", 32
    out = celeba.parent / "transfer"
    run(notebook, celeba.parent, CELEBA_DIR=str(celeba), OUTPUT_DIR=str(out), RUN="nb",
        MODEL=model, WEIGHTS=None, IMAGE_SIZE=size, BATCH_SIZE=16, EPOCHS=1, OPTIMIZER="adam",
        LR=1e-3, FINE_TUNE_LAYERS=10, FINE_TUNE_EPOCHS=1, EXTRA={"freeze_base": True})  # fmt: skip

    stem = f"{task}_{model}_nb"
    for rel in (f"models/{stem}.keras", f"models/{stem}.h5", f"models/{stem}.json",
                f"plots/{stem}_history.png", f"plots/{stem}_confusion.png",
                f"plots/{stem}_samples.png", f"predictions/{stem}.csv"):  # fmt: skip
        assert (out / rel).stat().st_size > 0, rel
    card = json.loads((out / f"models/{stem}.json").read_text())
    assert card["experiment"]["weights"] is None and card["experiment"]["image_size"] == size
    assert card["epochs_run"] == 2 and card["experiment"]["fine_tune_epochs"] == 1
    assert pd.read_csv(out / "models/results.csv")["stem"].tolist() == [stem]
    assert list(pd.read_csv(out / f"models/{stem}_history.csv")["epoch"]) == [0, 1]  # one curve
    backbone = get_backbone(load_model_file(out / f"models/{stem}.h5"))
    assert batchnorms(backbone)
    for norm in batchnorms(backbone):  # frozen in both phases: still what a new layer starts with
        for name, start in (("gamma", 1), ("beta", 0), ("moving_mean", 0), ("moving_variance", 1)):
            np.testing.assert_array_equal(getattr(norm, name), start, err_msg=norm.name)


def test_the_transfer_notebooks_share_their_code_and_their_parameters_run():
    code, names = code_and_parameters(TRANSFER_NOTEBOOKS[0])
    assert names["WEIGHTS"] == "imagenet" and len(code) > 5
    for notebook in TRANSFER_NOTEBOOKS[1:]:
        other_code, other_names = code_and_parameters(notebook)
        assert other_code == code, f"{notebook}: its code cells differ from the other notebooks'"
        assert other_names.keys() == names.keys(), notebook


def test_compare_models_draws_the_table_and_the_figure(tmp_path):
    rows = [
        {
            "stem": f"{task}_{model}_x",
            "task": task,
            "model": model,
            "run": "x",
            "test_accuracy": acc,
            "test_loss": 1 - acc,
        }  # fmt: skip
        for task, model, acc in [
            ("orientation", "inceptionv3", 0.86),
            ("orientation", "resnet50", 0.87),
            ("light", "inceptionv3", 0.90),
            ("light", "resnet50", 0.88),
            ("light", "fromscratch", 0.95),
            ("gender", "mobilenetv2", 0.93),
        ]  # fmt: skip
    ]
    (tmp_path / "models").mkdir()
    pd.DataFrame(rows).reindex(columns=RESULTS_COLUMNS).to_csv(
        tmp_path / "models/results.csv", index=False
    )
    executed = run("compare_models.ipynb", tmp_path, OUTPUT_DIR=str(tmp_path))
    assert (tmp_path / "plots/compare_models.png").stat().st_size > 0
    tables = [
        "".join(o["data"].get("text/plain", ""))
        for cell in executed["cells"]
        for o in cell.get("outputs", [])
        if "data" in o
    ]
    assert any("resnet50" in t and "0.87" in t and "gender" not in t for t in tables)
