"""Atomic outputs: a write that dies half-way leaves the previous version intact."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from facelab.config import Experiment
from facelab.io import atomic_path, atomic_write_csv, check_writable
from tests.test_train import light_manifest, tiny  # noqa: F401  (fixture)


def test_a_write_that_fails_half_way_keeps_the_previous_file(tmp_path):
    target = tmp_path / "results.csv"
    atomic_write_csv(pd.DataFrame({"a": [1, 2]}), target)
    before = target.read_bytes()
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("a\n1\n")  # half of the new version...
        raise RuntimeError("killed")  # ...then the process dies
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_outputs_are_readable_like_plain_files(tmp_path):
    atomic_write_csv(pd.DataFrame({"a": [1]}), tmp_path / "x.csv")
    assert (tmp_path / "x.csv").stat().st_mode & 0o044  # not the 0600 of a raw temp file


def test_check_writable_names_the_target_and_leaves_nothing_behind(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PermissionError, match="cannot write there"):
        check_writable(tmp_path / "file" / "out.csv")
    check_writable(tmp_path / "new" / "out.csv")
    assert list((tmp_path / "new").iterdir()) == []


def test_deterministic_runs_give_the_same_weights(light_manifest, tmp_path):  # noqa: F811
    import keras

    from facelab.train import run_experiment

    weights = []
    for out in ("a", "b"):
        exp: Experiment = tiny(light_manifest, tmp_path / out, epochs=1, deterministic=True)
        run_experiment(exp, verbose=0)
        model = keras.models.load_model(tmp_path / out / "models/light_fromscratch_t.keras")
        weights.append(model.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))
