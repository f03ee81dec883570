"""Extended Yale B file names -> light-direction ground truth."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
from conftest import shared_data

from facelab.data.skipped import SkipLog
from facelab.data.yaleb import azimuth_label, read_yaleb

LIT = {
    "yaleB01/yaleB01_P00A+035E-20.pgm": ("yaleB01", 35, -20, "left"),
    "yaleB01/yaleB01_P00A-070E+45.pgm": ("yaleB01", -70, 45, "right"),
    "yaleB01/yaleB01_P00A+000E+90.pgm": ("yaleB01", 0, 90, "center"),
    "yaleB01/yaleB01_P00A-010E-20.pgm": ("yaleB01", -10, -20, "center"),
    "yaleB02/yaleB02_P00A+015E+20.pgm": ("yaleB02", 15, 20, "left"),
}


def _pgm(path, value=90):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((12, 10), value, np.uint8))


@pytest.fixture
def yale_tree(tmp_path):
    for name in LIT:
        _pgm(tmp_path / name)
    _pgm(tmp_path / "yaleB01" / "yaleB01_P00_Ambient.pgm")
    _pgm(tmp_path / "yaleB02" / "yaleB02_P00_Ambient.pgm")
    _pgm(tmp_path / "yaleB02" / "yaleB02_P00A+35E-20.pgm")  # azimuth without its three digits
    (tmp_path / "yaleB01" / "DEADJOE").write_text("junk from the original archive\n")
    (tmp_path / "yaleB01" / "WS_FTP.LOG").write_text("101 transfers\n")
    (tmp_path / "yaleB01" / "yaleB01_P00.info").write_text("yaleB01_P00A+035E-20.pgm\n")
    return tmp_path


def test_file_names_give_subject_azimuth_elevation_and_label(yale_tree):
    with pytest.warns(UserWarning, match="P00A"):
        frame = read_yaleb(yale_tree)
    assert list(frame.columns) == ["path", "subject", "group", "azimuth", "elevation", "label"]
    expected = sorted((str((yale_tree / name).resolve()), *truth) for name, truth in LIT.items())
    got = [(r.path, r.subject, r.azimuth, r.elevation, r.label) for r in frame.itertuples()]
    assert got == expected
    assert (frame["group"] == frame["subject"]).all()
    assert frame["azimuth"].dtype.kind == "i" and frame["elevation"].dtype.kind == "i"


def test_ambient_images_are_counted_not_labelled_and_junk_is_ignored(yale_tree):
    log = SkipLog()
    with pytest.warns(UserWarning) as caught:
        frame = read_yaleb(yale_tree, log)
    assert frame.attrs["ambient"] == 2
    assert not frame["path"].str.contains("Ambient|DEADJOE|LOG|info").any()
    # the only warning and the only skip: the .pgm whose name does not parse
    assert len(caught) == 1
    assert log.frame()["file"].tolist() == [str(yale_tree / "yaleB02" / "yaleB02_P00A+35E-20.pgm")]
    assert "yaleBNN_PxxA" in log.frame()["reason"][0]


def test_a_clean_folder_reads_without_warnings(yale_tree):
    (yale_tree / "yaleB02" / "yaleB02_P00A+35E-20.pgm").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = read_yaleb(yale_tree)
    assert len(frame) == len(LIT)


def test_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_yaleb(tmp_path / "nowhere")
    (tmp_path / "empty" / "yaleB01").mkdir(parents=True)
    (tmp_path / "empty" / "yaleB01" / "WS_FTP.LOG").write_text("")
    with pytest.raises(ValueError, match="empty.*no Extended Yale B images"):
        read_yaleb(tmp_path / "empty")


@pytest.mark.parametrize(
    "azimuth, label",
    [(130, "left"), (15, "left"), (10, "center"), (0, "center"), (-10, "center"), (-15, "right")],
)
def test_positive_azimuth_lights_the_image_left(azimuth, label):
    assert azimuth_label(azimuth) == label


def test_azimuth_between_the_classes_has_no_label():
    assert azimuth_label(12) is None


def test_real_yaleb_folder():
    root = shared_data("yaleb")
    log = SkipLog()
    frame = read_yaleb(root, log)
    assert len(log) == 0
    assert len(frame) == 1710 and frame["subject"].nunique() == 27
    assert frame.attrs["ambient"] == 27
    assert frame["label"].value_counts().to_dict() == {"left": 668, "right": 667, "center": 375}
    assert frame["path"].is_monotonic_increasing
