"""CelebA readers against snippets in the exact real formats."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facelab.data import celeba
from facelab.data.celeba_names import ATTRIBUTES
from facelab.data.skipped import SkipLog
from tests.conftest import shared_data

LANDMARKS = """3
lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y
000001.jpg    69  109  106  113   77  142   73  152  108  154
000002.jpg    69  110  107  112   81  135   70  151  108  153
000003.jpg    76  112  104  106  108  128   74  156   98  158
"""


def attr_row(name: str, male: int) -> str:
    values = [-1] * 40
    values[ATTRIBUTES.index("Male")] = male
    return name + "".join(f"{v:>3d}" for v in values)


def write_celeba(root, names=("000001.jpg", "000002.jpg", "000003.jpg"), size=(178, 218)):
    (root / "img_align_celeba").mkdir(parents=True)
    for name in names:
        image = np.full((size[1], size[0], 3), 128, np.uint8)
        cv2.imwrite(str(root / "img_align_celeba" / name), image)
    rows = [attr_row(n, 1 if i % 2 else -1) for i, n in enumerate(names)]
    (root / "list_attr_celeba.txt").write_text(
        f"{len(rows)}\n" + " ".join(ATTRIBUTES) + " \n" + "\n".join(rows) + "\n"
    )
    (root / "list_landmarks_align_celeba.txt").write_text(LANDMARKS)
    (root / "identity_CelebA.txt").write_text("000001.jpg 2880\n000002.jpg 2937\n000003.jpg 2880\n")
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 1\n000003.jpg 2\n")
    return root


def test_attribute_file_parses_count_header_and_runs_of_spaces(tmp_path):
    root = write_celeba(tmp_path)
    frame = celeba.read_attributes(root / "list_attr_celeba.txt")
    assert list(frame.columns) == list(ATTRIBUTES)
    assert frame.loc["000002.jpg", "Male"] == 1 and frame.loc["000001.jpg", "Male"] == -1


def test_landmarks_identities_and_partition_parse(tmp_path):
    root = write_celeba(tmp_path)
    marks = celeba.read_landmarks(root / "list_landmarks_align_celeba.txt")
    assert marks.loc["000003.jpg", "nose_x"] == 108
    assert celeba.read_identities(root / "identity_CelebA.txt")["000002.jpg"] == 2937
    assert celeba.read_partition(root / "list_eval_partition.txt")["000003.jpg"] == 2


def test_landmarks_are_scaled_to_the_actual_image_size(tmp_path):
    root = write_celeba(tmp_path, size=(89, 109))
    frame = celeba.load_celeba(root)
    assert frame.loc["000001.jpg", "lefteye_x"] == pytest.approx(69 / 2)
    assert frame.loc["000001.jpg", "lefteye_y"] == pytest.approx(109 / 2)


def test_malformed_line_is_skipped_with_its_line_number(tmp_path):
    root = write_celeba(tmp_path)
    path = root / "list_landmarks_align_celeba.txt"
    path.write_text(LANDMARKS.replace("000002.jpg    69  110", "000002.jpg    xx  110"))
    log = SkipLog()
    with pytest.warns(UserWarning, match="line 4"):
        marks = celeba.read_landmarks(path, log)
    assert list(marks.index) == ["000001.jpg", "000003.jpg"]
    assert log.rows == [("list_landmarks_align_celeba.txt, line 4", "non-numeric value")]


def test_duplicate_row_keeps_the_first_and_is_reported(tmp_path):
    root = write_celeba(tmp_path)
    path = root / "identity_CelebA.txt"
    path.write_text(path.read_text() + "000001.jpg 9999\n")
    log = SkipLog()
    with pytest.warns(UserWarning, match="duplicate"):
        ids = celeba.read_identities(path, log)
    assert ids["000001.jpg"] == 2880 and len(log) == 1


def test_file_that_is_not_an_annotation_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "list_attr_celeba.txt"
    bad.write_text("hello world\nthis is a readme\n")
    with pytest.raises(celeba.AnnotationError, match=r"list_attr_celeba.txt, line 1"):
        celeba.read_attributes(bad)
    binary = tmp_path / "list_landmarks_align_celeba.txt"
    binary.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)))
    with pytest.raises(celeba.AnnotationError, match="not a text annotation file"):
        celeba.read_landmarks(binary)


def test_listed_but_missing_image_and_unlisted_image_are_reported(tmp_path):
    root = write_celeba(tmp_path)
    (root / "img_align_celeba" / "000002.jpg").unlink()
    cv2.imwrite(str(root / "img_align_celeba" / "000009.jpg"), np.zeros((218, 178, 3), np.uint8))
    log = SkipLog()
    with pytest.warns(UserWarning):
        frame = celeba.load_celeba(root, log)
    assert sorted(frame.index) == ["000001.jpg", "000003.jpg"]
    reasons = dict(log.rows)
    assert any("000002.jpg" in k and "missing" in v for k, v in reasons.items())
    assert any(k.endswith("000009.jpg") and "no row" in v for k, v in reasons.items())


def test_zero_byte_and_text_files_in_the_image_folder_are_skipped(tmp_path):
    root = write_celeba(tmp_path)
    (root / "img_align_celeba" / "000001.jpg").write_bytes(b"")
    (root / "img_align_celeba" / "000003.jpg").write_text("not an image")
    log = SkipLog()
    with pytest.warns(UserWarning):
        frame = celeba.load_celeba(root, log)
    assert list(frame.index) == ["000002.jpg"]
    assert sum("not a readable image" in reason for _, reason in log.rows) == 2


def test_real_celeba_half_loads_with_scaled_landmarks():
    root = shared_data("celeba-half")
    log = SkipLog()
    frame = celeba.load_celeba(root, log)
    assert len(frame) == 7960 and len(log) == 0
    assert set(frame["width"]) == {89} and set(frame["height"]) == {109}
    marks = frame.dropna(subset=["nose_x"])
    assert len(marks) == 2371
    # scaled to the 89-pixel-wide images: eyes lie inside the image, left eye left of the right eye
    assert marks["righteye_x"].max() < 89 and (marks["lefteye_x"] < marks["righteye_x"]).all()
