"""The FromScratch and prediction notebooks run headless (papermill) with tiny parameters."""

from __future__ import annotations

import json

import nbformat
import pandas as pd
import papermill
import pytest

from facelab.data.synthetic import render_celeba
from tests.conftest import REPO

NOTEBOOKS = REPO / "notebooks"


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("nb")
    render_celeba(root / "celeba-synth", n=200, seed=1, progress=False)
    return root


def code_and_parameters(name: str) -> tuple[list[str], dict]:
    """A notebook's code cells but the parameters cell, and the names that cell defines."""
    code, names = [], {}
    for cell in nbformat.read(NOTEBOOKS / name, as_version=4).cells:
        if "parameters" in cell.metadata.get("tags", []):
            exec(cell.source, {}, names)  # it runs as it stands, before papermill's values
        elif cell.cell_type == "code":
            code.append(cell.source)
    return code, names


def run(name: str, out_dir, **parameters) -> dict:
    """Execute a notebook from the notebooks folder; returns the executed notebook as JSON."""
    executed = out_dir / f"executed_{name}"
    papermill.execute_notebook(
        str(NOTEBOOKS / name), str(executed), parameters=parameters,
        kernel_name="python3", progress_bar=False, cwd=str(NOTEBOOKS),
    )  # fmt: skip
    return json.loads(executed.read_text())


# The light notebook is the orientation one with the light task's defaults (tested below), so
# only the orientation one trains here.
@pytest.mark.parametrize("task", ["orientation"])
def test_fromscratch_notebook_trains_and_writes_its_outputs(task, synth):
    out = synth / task
    run(f"{task}_FromScratch.ipynb", synth, TASK=task, CELEBA_DIR=str(synth / "celeba-synth"),
        RUN="nb", OUTPUT_DIR=str(out), IMAGE_SIZE=32, EPOCHS=1, BATCH_SIZE=16)  # fmt: skip
    stem = f"{task}_fromscratch_nb"
    for rel in (f"models/{stem}.keras", f"models/{stem}.h5", f"plots/{stem}_history.png",
                f"plots/{stem}_samples.png", f"predictions/{stem}.csv",
                f"plots/{task}_labelled_samples.png"):  # fmt: skip
        assert (out / rel).is_file(), rel
    card = json.loads((out / f"models/{stem}.json").read_text())
    assert card["experiment"]["image_size"] == 32 and card["task"] == task


def test_the_fromscratch_notebooks_share_their_code_and_their_parameters_run():
    code, names = code_and_parameters("orientation_FromScratch.ipynb")
    light_code, light_names = code_and_parameters("light_FromScratch.ipynb")
    assert light_code == code and len(code) > 5, "the FromScratch notebooks' code cells differ"
    assert light_names.keys() == names.keys()
    assert (names["TASK"], light_names["TASK"]) == ("orientation", "light")


def test_make_predictions_notebook_predicts_a_folder(synth):
    model_dir = synth / "orientation" / "models"
    if not (model_dir / "orientation_fromscratch_nb.keras").exists():
        pytest.skip("needs the orientation notebook's model (run the whole module)")
    out = synth / "preds" / "all.csv"
    run("make_predictions.ipynb", synth, MODEL=str(model_dir / "orientation_fromscratch_nb.keras"),
        INPUTS=[str(synth / "celeba-synth" / "img_align_celeba")], OUT=str(out))  # fmt: skip
    preds = pd.read_csv(out)
    assert len(preds) == 200 and {"p_left", "p_center", "p_right"} <= set(preds.columns)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs_and_tag_their_parameters(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert any("parameters" in c.metadata.get("tags", []) for c in code)
