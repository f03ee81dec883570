"""Automatic labels: orientation from the five landmarks, light direction from pixel brightness."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, shared_data

from facelab.data.celeba_names import LANDMARK_COLUMNS
from facelab.data.labels import (
    CELEBA_FACE_BOX,
    LIGHT_MARGIN,
    LIGHT_THRESHOLD,
    ORIENTATION_MARGIN,
    ORIENTATION_THRESHOLD,
    calibrate_light,
    default_face_box,
    face_boxes_from_landmarks,
    label_light,
    label_orientation,
    light_feature_frame,
    light_features,
    light_score,
    yaw_proxy,
)
from facelab.data.skipped import SkipLog
from facelab.data.yaleb import read_yaleb

# ----------------------------------------------------------------------------- orientation


def _face(nose_x, eyes=(70.0, 108.0), eye_y=111.0, index=None):
    """Landmark rows (178x218 frame) with the eyes at ``eyes`` and the nose at ``nose_x``."""
    rows = [
        (eyes[0], eye_y, eyes[1], eye_y, x, 135.0, 72.0, 152.0, 105.0, 152.0)
        for x in np.atleast_1d(nose_x)
    ]
    return pd.DataFrame(rows, columns=list(LANDMARK_COLUMNS), index=index)


def test_nose_left_of_the_eyes_midpoint_is_left():
    marks = _face([75.0, 89.0, 103.0], index=["a.jpg", "b.jpg", "c.jpg"])  # midpoint 89, 38 apart
    out = label_orientation(marks)
    assert out["label"].to_dict() == {"a.jpg": "left", "b.jpg": "center", "c.jpg": "right"}
    np.testing.assert_allclose(out["score"], [-14 / 38, 0, 14 / 38])


def test_yaw_proxy_is_the_design_formula_for_level_eyes():
    marks = _face([80.0, 95.0])
    expected = (marks["nose_x"] - (marks["lefteye_x"] + marks["righteye_x"]) / 2) / 38.0
    np.testing.assert_allclose(yaw_proxy(marks), expected)


def test_head_roll_alone_does_not_read_as_a_turn():
    # a frontal face rolled by 20 degrees about the eyes' midpoint: the nose swings sideways
    angle = np.radians(20)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    mid = np.array([89.0, 111.0])
    pts = [mid + rot @ (np.array(p) - mid) for p in [(70, 111), (108, 111), (89, 135)]]
    marks = _face(0.0)
    marks[["lefteye_x", "lefteye_y"]] = pts[0]
    marks[["righteye_x", "righteye_y"]] = pts[1]
    marks[["nose_x", "nose_y"]] = pts[2]
    assert abs(yaw_proxy(marks).iloc[0]) < 1e-9
    assert label_orientation(marks)["label"].tolist() == ["center"]


def test_margin_drops_the_ambiguous_band_around_the_threshold():
    at = 89 + 38 * ORIENTATION_THRESHOLD
    inside = [at - 0.5 * 38 * ORIENTATION_MARGIN, at + 0.5 * 38 * ORIENTATION_MARGIN]
    outside = [at - 2 * 38 * ORIENTATION_MARGIN, at + 2 * 38 * ORIENTATION_MARGIN]
    out = label_orientation(_face(inside + outside))
    assert out.index.tolist() == [2, 3]
    assert out["label"].tolist() == ["center", "right"]
    assert out.attrs["dropped_ambiguous"] == 2
    everything = label_orientation(_face(inside + outside), margin=0)
    assert everything["label"].tolist() == ["center", "right", "center", "right"]


def test_missing_or_degenerate_landmarks_are_dropped():
    marks = _face([75.0, 80.0, 103.0])
    marks.loc[1, ["lefteye_x", "righteye_x"]] = 90.0  # both eyes on one point
    marks.loc[2, "nose_x"] = np.nan
    out = label_orientation(marks, margin=0)
    assert out.index.tolist() == [0]
    assert out.attrs["dropped_invalid"] == 2
    assert yaw_proxy(marks).isna().tolist() == [False, True, True]


def test_orientation_is_scale_free():
    marks = _face([60.0, 75.0, 86.0, 89.0, 92.0, 103.0, 120.0])
    full = label_orientation(marks, margin=0)
    half = label_orientation(marks * 0.5, margin=0)
    pd.testing.assert_frame_equal(full, half)


def test_a_mirrored_face_gets_the_mirrored_orientation():
    marks = _face([60.0, 75.0, 89.0, 103.0, 120.0])
    mirrored = marks.copy()
    mirrored["lefteye_x"] = 178 - marks["righteye_x"]  # the image-left eye stays in lefteye_*
    mirrored["righteye_x"] = 178 - marks["lefteye_x"]
    mirrored["nose_x"] = 178 - marks["nose_x"]
    flip = {"left": "right", "right": "left", "center": "center"}
    got = label_orientation(mirrored, margin=0)["label"].tolist()
    assert got == [flip[x] for x in label_orientation(marks, margin=0)["label"]]


def test_landmarks_without_the_columns_are_a_clear_error():
    with pytest.raises(ValueError, match="nose_x"):
        label_orientation(pd.DataFrame({"lefteye_x": [1.0]}))


# ----------------------------------------------------------------------------- light


def _ramp(left, right, shape=(24, 20)):
    """A grey image whose brightness runs linearly from ``left`` to ``right`` (RGB uint8)."""
    row = np.linspace(left, right, shape[1])
    grey = np.broadcast_to(row, shape).round().astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def test_left_bright_image_is_lit_from_the_left():
    images = [_ramp(230, 40), _ramp(40, 230), _ramp(128, 128)]
    out = label_light(images, margin=0)
    assert out["label"].tolist() == ["left", "right", "center"]
    assert out["score"][0] > 0 > out["score"][1] and out["score"][2] == pytest.approx(0, abs=1e-12)
    assert list(out.columns) == ["path", "label", "score"]


def test_a_mirrored_image_gets_the_mirrored_label_and_score():
    rng = np.random.default_rng(0)
    image = np.clip(_ramp(200, 60).astype(int) + rng.integers(-30, 30, (24, 20, 3)), 0, 255)
    image = image.astype(np.uint8)
    out = label_light([image, image[:, ::-1]], margin=0)
    assert out["label"].tolist() == ["left", "right"]
    assert out["score"][1] == pytest.approx(-out["score"][0])


def test_light_is_measured_on_hsv_value():
    red = np.zeros((24, 20, 3), np.uint8)
    red[:, :10, 0] = 220  # saturated red on the left: V = max(R, G, B) = 220
    red[:, 10:] = 60
    assert light_features(red)["asymmetry"] > 0.5
    assert label_light([red], margin=0)["label"].tolist() == ["left"]


def test_highlight_shares_use_the_v_170_threshold():
    image = np.full((10, 10), 100, np.uint8)
    image[:, :2] = 171
    image[:, 9] = 170  # not above the threshold
    features = light_features(image)
    assert features["highlight_left"] == pytest.approx(0.4)
    assert features["highlight_right"] == 0
    assert features["highlight_asymmetry"] == pytest.approx(0.4)


def test_margin_drops_unsure_and_too_dark_images():
    near = _ramp(128, 128)
    sure_left, dark = _ramp(240, 30), _ramp(8, 0)
    # a ramp whose score sits right at the threshold
    steps = [_ramp(128 + d, 128 - d) for d in range(0, 128, 2)]
    at = min(steps, key=lambda im: abs(light_score(im) - LIGHT_THRESHOLD))
    out = label_light([near, at, sure_left, dark])
    assert out.index.tolist() == [0, 2]
    assert out.attrs["dropped_ambiguous"] == 2
    assert len(label_light([near, at, sure_left, dark], margin=0)) == 4


def test_a_label_must_hold_in_every_third_of_the_face():
    patch = np.full((30, 30), 110, np.uint8)
    patch[:10, :15] = 255  # something bright in the top-left corner only, as hair or background
    features = light_features(patch)
    assert features["centroid"] > LIGHT_THRESHOLD + LIGHT_MARGIN
    assert features["centroid_middle"] == pytest.approx(0, abs=1e-12)
    assert features["centroid_bottom"] == pytest.approx(0, abs=1e-12)
    assert len(label_light([patch])) == 0
    assert label_light([patch], margin=0)["label"].tolist() == ["left"]


def test_celeba_shaped_images_are_measured_inside_the_face_box():
    assert default_face_box((218, 178)) == CELEBA_FACE_BOX
    assert default_face_box((109, 89, 3)) == CELEBA_FACE_BOX
    assert default_face_box((192, 168)) == (0.0, 0.0, 1.0, 1.0)
    image = np.full((109, 89, 3), 120, np.uint8)
    image[:, :20] = 255  # a bright background left of the face
    assert light_score(image) == pytest.approx(0, abs=1e-12)
    assert light_score(image, box=(0, 0, 1, 1)) > LIGHT_THRESHOLD


def test_score_does_not_depend_on_image_size():
    image = _ramp(220, 50, shape=(218, 178))
    small = cv2.resize(image, (89, 109), interpolation=cv2.INTER_AREA)
    assert light_score(small) == pytest.approx(light_score(image), abs=0.01)


def test_face_boxes_from_landmarks_frame_the_face_like_yale_b():
    boxes = face_boxes_from_landmarks(_face([89.0, 95.0]))
    x0, y0, x1, y1 = boxes[0]
    assert (x0 + x1) / 2 * 178 == pytest.approx(89.0)
    assert (x1 - x0) * 178 / 38 == pytest.approx(2 * 0.832)
    assert y0 * 218 < 111 < 152 < y1 * 218
    broken = _face([89.0])
    broken["righteye_x"] = broken["lefteye_x"]
    assert face_boxes_from_landmarks(broken)[0] is None


def test_unreadable_images_go_to_the_skip_log(tmp_path):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), _ramp(240, 30)[..., ::-1])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    log = SkipLog()
    with pytest.warns(UserWarning, match="bad.jpg"):
        out = label_light([bad, good], skip_log=log, margin=0)
    assert out["path"].tolist() == [str(good)]
    assert out.index.tolist() == [1]
    assert log.frame()["file"].tolist() == [str(bad)]


def test_one_box_per_image_is_required():
    with pytest.raises(ValueError, match="2 boxes for 1 images"):
        label_light([_ramp(200, 50)], boxes=[None, None])


def test_calibration_finds_a_threshold_between_the_classes(tmp_path):
    frame, features = [], []
    for group in range(6):
        for label, (a, b) in {"left": (230, 60), "center": (140, 120), "right": (60, 230)}.items():
            image = _ramp(a + group, b - group)
            frame.append({"path": f"{group}_{label}.png", "label": label, "group": f"s{group}"})
            features.append({"path": "", **light_features(image, linear=True)})
    result = calibrate_light(pd.DataFrame(frame), n_splits=3, features=pd.DataFrame(features))
    scores = pd.DataFrame(features)["centroid"].abs()
    assert scores.iloc[1::3].max() < result["threshold"] < scores.iloc[0::3].min()
    assert result["cv_accuracy"] == result["cv_kept_accuracy"] == 1.0
    assert result["n_groups"] == 6


# ----------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def yale():
    return read_yaleb(shared_data("yaleb"))


def test_light_labels_match_yale_b_with_nothing_dropped(yale):
    out = label_light(yale["path"].tolist(), margin=0, linear=True)
    assert len(out) == len(yale)
    accuracy = (out["label"].to_numpy() == yale["label"].to_numpy()).mean()
    assert accuracy >= 0.95


def test_sure_light_labels_on_yale_b(yale):
    out = label_light(yale["path"].tolist(), linear=True)
    kept = len(out) / len(yale)
    accuracy = (out["label"].to_numpy() == yale["label"].to_numpy()[out.index]).mean()
    assert kept >= 0.80 and accuracy >= 0.98


def test_subject_disjoint_calibration_beats_the_half_mean_rule_and_gives_the_constants(yale):
    features = light_feature_frame(yale["path"].tolist(), linear=True)
    result = calibrate_light(yale, features=features)
    assert result["cv_accuracy"] >= 0.95
    assert result["cv_kept_accuracy"] >= 0.98 and result["cv_kept_fraction"] >= 0.80
    assert result["cv_naive_accuracy"] < result["cv_accuracy"]
    assert result["naive_accuracy"] < result["accuracy"]
    assert result["threshold"] == pytest.approx(LIGHT_THRESHOLD, abs=5e-4)
    assert result["margin"] == pytest.approx(LIGHT_MARGIN, abs=5e-4)


def test_real_celeba_landmarks_are_mostly_frontal():
    root = shared_data("celeba-half")
    marks = pd.read_csv(root / "list_landmarks_align_celeba.txt", sep=r"\s+", skiprows=1)
    out = label_orientation(marks)
    shares = out["label"].value_counts(normalize=True)
    assert len(out) / len(marks) >= 0.7
    assert shares.idxmax() == "center" and shares.min() > 0.1


def test_real_celeba_light_labels_are_mostly_center_and_balanced():
    root = shared_data("celeba-half")
    paths = sorted((root / "img_align_celeba").glob("*.jpg"))[:1000]
    out = label_light(paths)
    counts = out["label"].value_counts()
    assert len(out) / len(paths) >= 0.6
    assert counts.idxmax() == "center"
    assert 0.5 < counts["left"] / counts["right"] < 2


# ----------------------------------------------------------------------------- synthetic faces


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    synth = pytest.importorskip("facelab.data.synthetic")
    root = tmp_path_factory.mktemp("synthetic")
    synth.render_celeba(root, n=400, seed=0, progress=False, workers=1)
    truth = pd.read_csv(root / "truth.csv").set_index("image_id")
    marks = pd.read_csv(root / "list_landmarks_align_celeba.txt", sep=r"\s+", skiprows=1)
    return root, truth, marks


def test_orientation_agrees_with_synthetic_truth(synthetic):
    _, truth, marks = synthetic
    out = label_orientation(marks)
    assert len(out) / len(marks) >= 0.80
    assert (out["label"] == truth.loc[out.index, "orientation"]).mean() >= 0.98


def test_light_agrees_with_synthetic_truth_on_sure_samples(synthetic):
    root, truth, _ = synthetic
    paths = [root / "img_align_celeba" / name for name in truth.index]
    out = label_light(paths)
    assert (out["label"].to_numpy() == truth["light"].to_numpy()[out.index]).mean() >= 0.95


def test_labels_module_does_not_import_tensorflow():
    code = "import sys, facelab.data.labels; sys.exit('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=60)
    assert done.returncode == 0


def test_a_huge_photo_gets_the_light_features_of_its_shrunken_copy():
    x = np.linspace(1.0, 0.3, 1500)  # lit from the image's left
    big = np.clip(np.outer(np.ones(1800), x) * 200, 0, 255).astype(np.uint8)
    big = np.dstack([big] * 3)
    small = cv2.resize(big, (375, 450), interpolation=cv2.INTER_AREA)
    features, expected = light_features(big), light_features(small)
    assert features["centroid"] > LIGHT_THRESHOLD + LIGHT_MARGIN
    assert features == pytest.approx(expected, rel=0.02, abs=0.005)
