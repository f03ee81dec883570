"""Bad input through the real entry points: a clear error or a skipped row, never a crash.

Every case also checks that no source file changed (content hashes before and after).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from facelab.__main__ import main
from facelab.models.scratch import build_fromscratch
from tests.test_celeba import write_celeba


def hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def lit(size=48, side="left") -> np.ndarray:
    x = np.linspace(-1, 1, size)[None, :, None] * (-60 if side == "left" else 60)
    return np.clip(120 + x + np.zeros((size, size, 3)), 0, 255).astype(np.uint8)


def odd_images(folder: Path) -> dict[str, str | None]:
    """Write one file per kind of odd image; value: the expected skip reason, or None if it loads."""
    folder.mkdir(parents=True)
    good = lit()
    cv2.imwrite(str(folder / "plain.jpg"), good)
    (folder / "zero.jpg").write_bytes(b"")
    data = (folder / "plain.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "text.jpg").write_text("this is not an image\n")
    Image.fromarray(np.dstack([good, np.full(good.shape[:2], 100, np.uint8)])).save(
        folder / "alpha.png"
    )
    Image.fromarray(good[..., 0].astype(np.uint16) * 257).save(folder / "sixteen.png")
    Image.fromarray(good[..., 0]).save(folder / "grey.jpg")
    Image.fromarray(good).convert("CMYK").save(folder / "cmyk.jpg")
    exif = Image.Image.getexif(Image.new("RGB", (1, 1)))
    exif[0x0112] = 3  # rotated 180 degrees
    Image.fromarray(good).save(folder / "exif_rotated.jpg", exif=exif)
    cv2.imwrite(str(folder / "huge.jpg"), np.full((10_000, 10_000, 3), 90, np.uint8))
    cv2.imwrite(str(folder / "one_pixel.png"), np.zeros((1, 1, 3), np.uint8))
    cv2.imwrite(str(folder / "name with spaces é ü.png"), good)
    cv2.imwrite(str(folder / "upper.JPEG"), good)
    (folder / "notes.txt").write_text("not an image, not looked at")
    return {
        "plain.jpg": None, "zero.jpg": "empty file", "truncated.jpg": "not a readable image",
        "text.jpg": "not a readable image", "alpha.png": None, "sixteen.png": None,
        "grey.jpg": None, "cmyk.jpg": None, "exif_rotated.jpg": None, "huge.jpg": None,
        "one_pixel.png": "too small", "name with spaces é ü.png": None, "upper.JPEG": None,
    }  # fmt: skip


@pytest.fixture(scope="module")
def odd(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("odd")
    expected = odd_images(root / "faces")
    return root / "faces", expected


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_clear_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.startswith("facelab: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_labelling_odd_images_loads_the_good_and_skips_the_bad_with_reasons(odd, tmp_path, capsys):
    folder, expected = odd
    before = hashes(folder)
    with pytest.warns(UserWarning):
        code, out, err = run_cli(["label", "--task", "light", "--images", folder,
                                  "--out", tmp_path / "light.csv", "--margin", "0",
                                  "--plot", tmp_path / "grid.png"], capsys)  # fmt: skip
    assert code == 0, err
    skipped = pd.read_csv(tmp_path / "light_skipped.csv")
    reasons = {Path(f).name: r for f, r in zip(skipped["file"], skipped["reason"], strict=True)}
    for name, reason in expected.items():
        if reason is None:
            assert name not in reasons, (name, reasons.get(name))
        else:
            assert reason in reasons[name], (name, reasons.get(name))
    labelled = {Path(p).name for p in pd.read_csv(tmp_path / "light.csv")["path"]}
    assert labelled == {n for n, r in expected.items() if r is None}
    assert hashes(folder) == before


def test_exif_rotation_is_applied_before_labelling(odd):
    from facelab.data.images import read_image

    folder, _ = odd
    rotated = read_image(folder / "exif_rotated.jpg").mean(axis=(0, 2))
    assert rotated[-5:].mean() > rotated[:5].mean() + 40  # the bright side moved to the right


def test_reading_at_a_size_is_reading_then_resizing_for_every_kind_of_image(odd):
    from facelab.data.images import read_image, resize_image

    folder, expected = odd
    for name in [n for n, reason in expected.items() if reason is None and n != "huge.jpg"]:
        for size in (24, 96):  # shrinking and enlarging
            direct = read_image(folder / name, size)
            assert direct.shape == (size, size, 3) and direct.dtype == np.uint8, name
            assert np.array_equal(direct, resize_image(read_image(folder / name), size)), name


def make_model(path: Path, size: int = 32) -> Path:
    model = build_fromscratch((size, size, 3), 3)
    model.save(path)
    return path


def test_prediction_of_odd_images_skips_the_bad_and_resizes_to_the_model(odd, tmp_path, capsys):
    folder, expected = odd
    before = hashes(folder)
    old = earlier_run(tmp_path)
    model = make_model(tmp_path / "m.keras", size=32)  # the images are 48 px and larger
    with pytest.warns(UserWarning):
        code, out, err = run_cli(["predict", model, folder, "--out", tmp_path / "p.csv",
                                  "--task", "light"], capsys)  # fmt: skip
    assert code == 0, err
    predicted = {Path(p).name for p in pd.read_csv(tmp_path / "p.csv")["path"]}
    assert predicted == {n for n, r in expected.items() if r is None}
    skipped = {Path(f).name for f in pd.read_csv(tmp_path / "p_skipped.csv")["file"]}
    assert skipped == {n for n, r in expected.items() if r is not None}
    assert hashes(folder) == before
    assert {rel: hashes(tmp_path)[rel] for rel in old} == old


def write_manifest_text(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "manifest, fragments",
    [
        ("path,split\na.jpg,train\n", ["m.csv", "missing column(s) ['label']"]),
        (
            "path,label,split\na.jpg,upward,train\n",
            ["m.csv, row 2", "'upward'", "left, center, right"],
        ),
        (
            "path,label,split\na.jpg,left,train\nb.jpg,center,val\n",
            ["train split has no sample", "re-split"],
        ),
        ("path,label\na.jpg,left\n", ["missing column(s) ['split']", "split_dataset.py"]),
        ("path,label,split\n", ["no rows"]),
        ("path,label,split\na.jpg,left,dev\n", ["row 2", "split 'dev'"]),
    ],
    ids=[
        "missing-column",
        "unknown-label",
        "class-missing-in-train",
        "no-split",
        "empty",
        "bad-split",
    ],
)
def test_bad_manifests_for_training_are_clear_errors(manifest, fragments, tmp_path, capsys):
    path = write_manifest_text(tmp_path, manifest)
    before = path.read_bytes()
    code, _, err = run_cli(
        ["train", "--task", "light", "--manifest", path, "--epochs", "1"], capsys
    )
    assert_clear_error(code, err, *fragments)
    assert path.read_bytes() == before


def test_duplicate_manifest_rows_are_dropped_with_a_warning(tmp_path):
    from facelab.data.manifest import read_manifest

    path = write_manifest_text(tmp_path, "path,label,split\na.jpg,left,train\na.jpg,left,train\n")
    with pytest.warns(UserWarning, match="duplicate"):
        assert len(read_manifest(path)) == 1


def earlier_run(output_dir: Path) -> dict[str, str]:
    """Outputs of another, earlier run in ``output_dir``; returns their hashes."""
    for rel in ("models/light_fromscratch_old.keras", "plots/light_fromscratch_old_history.png",
                "predictions/light_fromscratch_old.csv"):  # fmt: skip
        (output_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (output_dir / rel).write_bytes(rel.encode() * 10)
    pd.DataFrame([{"stem": "light_fromscratch_old", "test_accuracy": 0.5}]).to_csv(
        output_dir / "models/results.csv", index=False
    )
    return hashes(output_dir)


def test_listed_image_missing_during_training_is_skipped_and_the_run_goes_on(tmp_path, capsys):
    old = earlier_run(tmp_path / "o")
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(60):
        side = ("left", "center", "right")[i % 3]
        cv2.imwrite(
            str(tmp_path / f"img/{i}.png"), lit(side="left" if side != "right" else "right")
        )
        rows.append((f"img/{i}.png", side, ("train", "train", "val", "test")[i % 4]))
    rows.append(("img/gone.png", "left", "train"))
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(tmp_path / "m.csv", index=False)
    with pytest.warns(UserWarning, match="gone.png"):
        code, out, err = run_cli(["train", "--task", "light", "--manifest", tmp_path / "m.csv",
                                  "--epochs", "1", "--image-size", "32", "--output-dir", tmp_path / "o"],
                                 capsys)  # fmt: skip
    assert code == 0, err
    skipped = pd.read_csv(tmp_path / "o/models/light_fromscratch_skipped.csv")
    assert skipped["file"].str.endswith("gone.png").any()
    now = hashes(tmp_path / "o")
    assert all(now[rel] == digest for rel, digest in old.items() if "results.csv" not in rel)
    results = pd.read_csv(tmp_path / "o/models/results.csv")
    assert list(results["stem"]) == ["light_fromscratch_old", "light_fromscratch"]


def test_empty_folder_and_missing_folder_are_clear_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["label", "--task", "light", "--images", tmp_path / "empty",
                            "--out", tmp_path / "x.csv"], capsys)  # fmt: skip
    assert_clear_error(code, err, "empty", "no images found")
    code, _, err = run_cli(["label", "--task", "mask", "--folders", tmp_path / "nope",
                            "--out", tmp_path / "x.csv"], capsys)  # fmt: skip
    assert_clear_error(code, err, "nope", "no such folder")
    assert not (tmp_path / "x.csv").exists()


def test_celeba_annotation_problems(tmp_path, capsys):
    root = write_celeba(tmp_path / "celeba")
    (root / "list_attr_celeba.txt").write_text("hello\nnot an annotation file\n")
    before = hashes(root)
    code, _, err = run_cli(
        ["label", "--task", "gender", "--celeba", root, "--out", tmp_path / "g.csv"], capsys
    )
    assert_clear_error(code, err, "list_attr_celeba.txt, line 1", "CelebA annotation file")
    assert hashes(root) == before


def test_a_file_that_is_not_a_model_is_a_clear_error(tmp_path, capsys):
    fake = tmp_path / "model.keras"
    fake.write_text("not a zip")
    (tmp_path / "img.png").write_bytes(cv2.imencode(".png", lit())[1].tobytes())
    code, _, err = run_cli(["predict", fake, tmp_path / "img.png", "--out", tmp_path / "p.csv",
                            "--task", "light"], capsys)  # fmt: skip
    assert_clear_error(code, err, "model.keras", "cannot be loaded as a Keras model")
    code, _, err = run_cli(["predict", tmp_path / "img.png", tmp_path / "img.png", "--out",
                            tmp_path / "p.csv", "--task", "light"], capsys)  # fmt: skip
    assert_clear_error(code, err, "img.png", "not a model file")


def test_a_model_for_another_task_is_a_clear_error(tmp_path, capsys):
    model = make_model(tmp_path / "m.keras")
    (tmp_path / "img.png").write_bytes(cv2.imencode(".png", lit())[1].tobytes())
    code, _, err = run_cli(["predict", model, tmp_path / "img.png", "--out", tmp_path / "p.csv",
                            "--task", "gender"], capsys)  # fmt: skip
    assert_clear_error(code, err, "3 outputs", "gender", "--task")


def test_a_lambda_model_is_refused_by_safe_loading(tmp_path, capsys):
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    (tmp_path / "img.png").write_bytes(cv2.imencode(".png", lit())[1].tobytes())
    code, _, err = run_cli(["predict", tmp_path / "lambda.keras", tmp_path / "img.png",
                            "--out", tmp_path / "p.csv", "--task", "light"], capsys)  # fmt: skip
    assert_clear_error(code, err, "lambda.keras", "cannot be loaded")


def test_an_output_folder_that_cannot_be_written_is_a_clear_error(odd, tmp_path, capsys):
    folder, _ = odd
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    code, _, err = run_cli(["label", "--task", "light", "--images", folder,
                            "--out", blocker / "light.csv"], capsys)  # fmt: skip
    assert_clear_error(code, err, "light.csv", "cannot write there", "another output")
    assert blocker.read_text() == "a file where a folder should be"
