"""Shared fixtures: the real-data folder beside the checkout, and small files in the real formats."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# pytest-xdist runs a worker per core (and one more): one TensorFlow thread each (also in the
# notebook kernels and command-line runs the tests start), not every worker's pools on all cores.
THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")
for _var in THREAD_VARIABLES:
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """A folder of ../shared/data, or skip the test when it is absent."""
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"real data {folder} not present")
    return folder


@pytest.fixture
def chdir_tmp(tmp_path, monkeypatch) -> Path:
    """Run the test inside an empty folder (outputs land in tmp_path/models, plots, ...)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# The files that take longest start first, so that no worker is left with one of them at the end
# while the other idles (with --no-loadscope-reorder, pytest-xdist hands out files in this order).
_LONGEST_FIRST = ("test_notebooks_gender.py", "test_notebooks_transfer.py", "test_transfer.py",
                  "test_train.py", "test_speed_switches.py", "test_resume.py", "test_notebooks.py",
                  "test_mask.py", "test_verification.py", "test_sweep.py")  # fmt: skip


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))


def pytest_xdist_auto_num_workers(config) -> int:
    """One worker more than cores: workers sit idle at times while a notebook kernel or a
    subprocess starts and stops, and the extra one keeps every core busy (2 cores: the suite
    went from 8 min 10 s, 15% idle, to 7 min 3 s, 2% idle)."""
    return len(os.sched_getaffinity(0)) + 1
