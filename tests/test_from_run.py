"""A run can start from an earlier run's model (CelebA pretraining -> Adience fine-tuning)."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from facelab.config import Experiment
from facelab.models import build_model
from facelab.models.scratch import build_fromscratch
from facelab.models.transfer import get_backbone
from facelab.tasks import get_task
from facelab.train import joined_history, load_start_model, run_experiment
from tests import test_train
from tests.test_train import tiny

light_manifest = test_train.light_manifest  # the fixture, shared


@pytest.fixture(scope="module")
def other_domain(light_manifest, tmp_path_factory) -> str:
    """The same faces, darker and with less contrast: a second dataset of the same task."""
    import cv2

    root = tmp_path_factory.mktemp("other")
    frame = pd.read_csv(light_manifest)
    (root / "img").mkdir()
    base = Path(light_manifest).parent
    for name in frame["path"]:
        image = cv2.imread(str(base / name)).astype(np.float32)
        cv2.imwrite(str(root / name), np.clip(0.5 * image + 20, 0, 255).astype(np.uint8))
    frame.to_csv(root / "m.csv", index=False)
    return str(root / "m.csv")


def test_fine_tuning_from_an_earlier_run_reports_both_test_sets_and_joins_the_curves(
    light_manifest,
    other_domain,
    tmp_path,
):
    first = run_experiment(tiny(light_manifest, tmp_path, run="pre", epochs=2), verbose=0)
    exp = tiny(other_domain, tmp_path, run="ft", epochs=2, from_run="pre", lr=1e-3)
    card = run_experiment(exp, verbose=0)

    stages = pd.read_csv(tmp_path / "models/light_fromscratch_ft_stages.csv")
    assert list(stages["stage"]) == ["light_fromscratch_pre", "light_fromscratch_ft"]
    # Both manifests are called m.csv: each column is named by its folder too.
    this, before = (f"{Path(m).parent.name}/m" for m in (other_domain, light_manifest))
    assert set(stages.columns) == {"stage", "model", this, before}
    # The diagonal comes from the runs' own cards; the rest is measured anew.
    assert stages.loc[1, this] == pytest.approx(card["metrics"]["test"]["accuracy"])
    assert stages.loc[0, before] == pytest.approx(first["metrics"]["test"]["accuracy"])
    assert card["stages"][0]["stage"] == first["stem"]
    assert card["experiment"]["from_run"] == "pre"
    earlier = json.loads((tmp_path / "models/light_fromscratch_pre.json").read_text())
    assert earlier["experiment"]["from_run"] == ""

    history = pd.read_csv(tmp_path / "models/light_fromscratch_ft_history.csv")
    joined, start = joined_history(exp, history)
    assert start == 2 and list(joined["epoch"]) == [0, 1, 2, 3]
    assert (tmp_path / "plots/light_fromscratch_ft_history.png").stat().st_size > 0


def test_a_frozen_backbone_is_unfrozen_for_fine_tuning_with_batchnorm_in_inference_mode(tmp_path):
    exp = Experiment(task="gender", model="mobilenetv2", image_size=32, output_dir=str(tmp_path),
                     run="pre", extra={"freeze_base": True})  # fmt: skip
    model = build_model(exp, get_task("gender"))
    (tmp_path / "models").mkdir()
    model.save(tmp_path / "models/gender_mobilenetv2_pre.keras")
    assert not get_backbone(model).trainable

    loaded = load_start_model(exp.replace(run="ft", from_run="pre", lr=1e-5), get_task("gender"))
    backbone = get_backbone(loaded)
    batchnorms = [la for la in backbone.layers if isinstance(la, keras.layers.BatchNormalization)]
    convs = [la for la in backbone.layers if isinstance(la, keras.layers.Conv2D)]
    assert batchnorms and all(not bn.trainable for bn in batchnorms)
    assert convs and all(conv.trainable for conv in convs)


def test_from_run_errors_name_the_missing_run_and_a_size_mismatch(light_manifest, tmp_path):
    with pytest.raises(FileNotFoundError, match="train that run first"):
        run_experiment(tiny(light_manifest, tmp_path, run="x", from_run="nope"), verbose=0)
    (tmp_path / "models").mkdir(exist_ok=True)  # an earlier run's model, at 32 px
    build_fromscratch((32, 32, 3), 3).save(tmp_path / "models/light_fromscratch_pre.keras")
    with pytest.raises(ValueError, match="pass --image-size 32"):
        run_experiment(
            tiny(light_manifest, tmp_path, run="x", from_run="pre", image_size=48), verbose=0
        )
