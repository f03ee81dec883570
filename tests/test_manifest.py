"""Manifest reading: relative paths, clear errors for the mistakes users make."""

from __future__ import annotations

import pandas as pd
import pytest

from facelab.data.manifest import ManifestError, read_manifest, write_manifest
from facelab.tasks import get_task


def write(tmp_path, text: str):
    path = tmp_path / "m.csv"
    path.write_text(text)
    return path


def test_paths_resolve_against_the_manifest_folder_and_round_trip(tmp_path):
    path = write(tmp_path, "path,label,split,group\nimgs/a.jpg,left,train,1\n")
    frame = read_manifest(path, get_task("orientation"))
    assert frame.loc[0, "path"] == str(tmp_path / "imgs" / "a.jpg")
    write_manifest(frame, tmp_path / "out.csv")
    assert pd.read_csv(tmp_path / "out.csv")["path"][0] == "imgs/a.jpg"


def test_missing_column_names_the_column_and_the_fix(tmp_path):
    with pytest.raises(ManifestError, match=r"missing column\(s\) \['label'\]"):
        read_manifest(write(tmp_path, "path,split\na.jpg,train\n"))
    with pytest.raises(ManifestError, match="split_dataset.py"):
        read_manifest(write(tmp_path, "path,label\na.jpg,left\n"), require_split=True)


def test_label_not_among_the_task_classes_names_row_and_classes(tmp_path):
    path = write(tmp_path, "path,label\na.jpg,left\nb.jpg,upward\n")
    with pytest.raises(ManifestError, match=r"row 3: label 'upward' .* left, center, right"):
        read_manifest(path, get_task("orientation"))


def test_duplicate_rows_are_dropped_with_a_warning_and_conflicts_are_errors(tmp_path):
    path = write(tmp_path, "path,label\na.jpg,left\na.jpg,left\nb.jpg,right\n")
    with pytest.warns(UserWarning, match="1 duplicate"):
        assert len(read_manifest(path)) == 2
    clash = write(tmp_path, "path,label\na.jpg,left\na.jpg,right\n")
    with pytest.raises(ManifestError, match="more than once"):
        read_manifest(clash)


def test_unknown_split_value_and_empty_manifest_are_errors(tmp_path):
    with pytest.raises(ManifestError, match="split 'dev'"):
        read_manifest(write(tmp_path, "path,label,split\na.jpg,left,dev\n"))
    with pytest.raises(ManifestError, match="no rows"):
        read_manifest(write(tmp_path, "path,label\n"))


def test_file_that_is_not_a_csv_is_an_error(tmp_path):
    path = tmp_path / "model.csv"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    with pytest.raises((ManifestError, ValueError)):
        read_manifest(path)
