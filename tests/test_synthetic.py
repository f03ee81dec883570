"""The embedded miniature CelebA: real file formats, determinism, and yaw and light that show."""

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from facelab.data.celeba_names import ALIGNED_SIZE, ATTRIBUTES, LANDMARK_COLUMNS
from facelab.data.synthetic import (
    IMAGE_DIR,
    TRUTH_COLUMNS,
    render_celeba,
    render_face,
    sample_identity,
)

N = 80
ANNOTATIONS = (
    "list_landmarks_align_celeba.txt",
    "list_attr_celeba.txt",
    "identity_CelebA.txt",
    "list_eval_partition.txt",
    "truth.csv",
)


@pytest.fixture(scope="module")
def celeba(tmp_path_factory) -> Path:
    return render_celeba(tmp_path_factory.mktemp("synth") / "celeba", n=N, seed=3, progress=False)


def _landmarks(root: Path) -> pd.DataFrame:
    frame = pd.read_csv(root / "list_landmarks_align_celeba.txt", sep=r"\s+", skiprows=1)
    return frame.join(pd.read_csv(root / "truth.csv", index_col="image_id"))


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_images_are_178x218_jpegs_named_like_celeba(celeba):
    names = sorted(p.name for p in (celeba / IMAGE_DIR).iterdir())
    assert names == [f"{i:06d}.jpg" for i in range(1, N + 1)]
    image = cv2.imread(str(celeba / IMAGE_DIR / "000001.jpg"))
    assert image.shape == (ALIGNED_SIZE[1], ALIGNED_SIZE[0], 3)
    assert (celeba / IMAGE_DIR / "000001.jpg").read_bytes()[:3] == b"\xff\xd8\xff"


def test_landmark_file_has_count_header_and_width_5_columns(celeba):
    lines = _lines(celeba / "list_landmarks_align_celeba.txt")
    assert lines[0] == str(N)
    assert lines[1] == " ".join(LANDMARK_COLUMNS)
    assert len(lines) == N + 2
    first = lines[2].split()
    assert first[0] == "000001.jpg"
    assert lines[2] == first[0] + "".join(f"{int(v):>5d}" for v in first[1:])
    frame = pd.read_csv(celeba / "list_landmarks_align_celeba.txt", sep=r"\s+", skiprows=1)
    assert list(frame.columns) == list(LANDMARK_COLUMNS)
    assert frame.index[0] == "000001.jpg" and len(frame) == N
    assert (frame.lefteye_x < frame.righteye_x).all()  # "left" is the image's left
    assert frame.lefteye_y.between(95, 125).all()  # eyes placed like CelebA's aligned faces


def test_attribute_file_has_40_names_and_plus_minus_one_rows(celeba):
    lines = _lines(celeba / "list_attr_celeba.txt")
    assert lines[0] == str(N)
    assert lines[1] == " ".join(ATTRIBUTES) + " "
    for line in lines[2:]:
        fields = line.split()
        assert len(fields) == 41
        assert line == fields[0] + "".join(f"{int(v):>3d}" for v in fields[1:])
    frame = pd.read_csv(celeba / "list_attr_celeba.txt", sep=r"\s+", skiprows=1)
    assert list(frame.columns) == list(ATTRIBUTES) and len(frame) == N
    assert set(np.unique(frame.to_numpy())) == {-1, 1}


def test_identity_and_partition_files_split_by_person(celeba):
    ids = pd.read_csv(celeba / "identity_CelebA.txt", sep=r"\s+", header=None, names=["f", "i"])
    parts = pd.read_csv(
        celeba / "list_eval_partition.txt", sep=r"\s+", header=None, names=["f", "p"]
    )
    assert ids.f.tolist() == parts.f.tolist() == [f"{i:06d}.jpg" for i in range(1, N + 1)]
    assert ids.i.dtype.kind == "i" and ids.i.nunique() == N // 10
    assert ids.groupby("i").size().max() > 1  # several photos per person
    assert set(parts.p) <= {0, 1, 2}
    assert parts.assign(i=ids.i).groupby("i").p.nunique().max() == 1


def test_truth_classes_follow_yaw_and_light(celeba):
    truth = pd.read_csv(celeba / "truth.csv")
    assert list(truth.columns[: len(TRUTH_COLUMNS)]) == list(TRUTH_COLUMNS)
    assert truth.image_id.tolist() == [f"{i:06d}.jpg" for i in range(1, N + 1)]
    expected = np.select([truth.yaw < -10, truth.yaw > 10], ["left", "right"], "center")
    assert (truth.orientation == expected).all()
    directional = truth[truth.light_kind == "directional"]
    side = np.select(
        [directional.light_azimuth > 14, directional.light_azimuth < -14],
        ["left", "right"],
        "center",
    )
    assert (directional.light == side).all()
    assert (truth[truth.light_kind != "directional"].light == "center").all()


def test_same_seed_gives_byte_identical_files_and_other_seeds_differ(tmp_path):
    a = render_celeba(tmp_path / "a", n=12, seed=5, progress=False)
    b = render_celeba(tmp_path / "b", n=12, seed=5, progress=False)
    c = render_celeba(tmp_path / "c", n=12, seed=6, progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 12 + len(ANNOTATIONS) + 1  # + the marker
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / IMAGE_DIR / "000001.jpg").read_bytes() != (
        c / IMAGE_DIR / "000001.jpg"
    ).read_bytes()


def test_two_worker_processes_write_the_same_bytes_as_one(tmp_path):
    one = render_celeba(tmp_path / "one", n=100, seed=2, progress=False, workers=1)
    two = render_celeba(tmp_path / "two", n=100, seed=2, progress=False, workers=2)
    for f in [*ANNOTATIONS, f"{IMAGE_DIR}/000001.jpg", f"{IMAGE_DIR}/000100.jpg"]:
        assert (one / f).read_bytes() == (two / f).read_bytes(), f


def test_yaw_shows_in_landmarks(celeba):
    marks = _landmarks(celeba)
    turned = marks[marks.yaw.abs() > 10]
    assert len(turned) >= N // 3
    nose_offset = turned.nose_x - (turned.lefteye_x + turned.righteye_x) / 2
    assert (np.sign(nose_offset) == np.sign(turned.yaw)).all()


def _lit_half_is_brighter(image: np.ndarray, marks: pd.Series, azimuth: float) -> bool:
    """Median HSV value of the left vs right half of the face, split at the eyes' midpoint."""
    value = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)[..., 2]
    mid = int(round((marks.lefteye_x + marks.righteye_x) / 2))
    half = int(round(0.6 * (marks.righteye_x - marks.lefteye_x)))
    top = int(min(marks.lefteye_y, marks.righteye_y)) - 20
    bottom = int(max(marks.leftmouth_y, marks.rightmouth_y)) + 5
    left = np.median(value[top:bottom, mid - half : mid])
    right = np.median(value[top:bottom, mid : mid + half])
    return left > right if azimuth > 0 else right > left


def test_light_shows_as_the_brighter_half_of_the_face(celeba):
    marks = _landmarks(celeba)
    lit = marks[(marks.light_kind == "directional") & (marks.light_azimuth.abs() >= 30)]
    assert len(lit) >= N // 4
    brighter = [
        _lit_half_is_brighter(cv2.imread(str(celeba / IMAGE_DIR / name)), row, row.light_azimuth)
        for name, row in lit.iterrows()
    ]
    assert np.mean(brighter) >= 0.9


def test_male_attribute_and_beards_match_the_drawing(celeba):
    attrs = pd.read_csv(celeba / "list_attr_celeba.txt", sep=r"\s+", skiprows=1)
    truth = pd.read_csv(celeba / "truth.csv", index_col="image_id")
    assert (attrs.Male == np.where(truth.male == 1, 1, -1)).all()
    bearded = attrs.No_Beard == -1
    assert (attrs.Male[bearded] == 1).all()  # only men get beards
    assert (bearded[(attrs.Goatee == 1) | (attrs.Mustache == 1)]).all()
    assert 0 < (attrs.Male == 1).mean() < 1


def test_refuses_to_write_into_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "photos.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a facelab synthetic dataset"):
        render_celeba(tmp_path, n=3, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["photos.txt"]
    assert (tmp_path / "photos.txt").read_text() == "mine"


def test_rerendering_an_earlier_render_replaces_it(tmp_path):
    render_celeba(tmp_path, n=8, seed=1, progress=False)
    render_celeba(tmp_path, n=4, seed=1, progress=False)
    assert len(list((tmp_path / IMAGE_DIR).iterdir())) == 4
    assert _lines(tmp_path / "list_attr_celeba.txt")[0] == "4"


def test_render_face_turns_the_nose_and_lights_the_given_side():
    rng = np.random.default_rng(0)
    person = sample_identity(rng, 1)
    image, marks = render_face(
        rng, yaw=-30, light_azimuth=70, light_kind="directional", identity=person
    )
    assert image.shape == (218, 178, 3) and image.dtype == np.uint8 and marks.shape == (5, 2)
    assert marks[2, 0] < marks[:2, 0].mean()  # nose left of the eyes: turned to the left
    row = pd.Series(marks.ravel(), index=list(LANDMARK_COLUMNS))
    assert _lit_half_is_brighter(image[..., ::-1], row, azimuth=70)
    _, frontal = render_face(rng, yaw=0, light_azimuth=0, light_kind="flat", identity=person)
    eyes = frontal[1] - frontal[0]  # measure along the eye line: the head may roll a little
    offset = (frontal[2] - frontal[:2].mean(0)) @ eyes / np.linalg.norm(eyes)
    assert abs(offset) < 1.5
