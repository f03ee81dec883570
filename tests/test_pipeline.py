"""The tf.data input pipeline: every format decodes, bad files are skipped, flips swap left/right."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np
import pytest

from facelab.config import Experiment
from facelab.data.pipeline import (
    augment_batch,
    cache_prefix,
    encode_labels,
    make_dataset,
    make_predict_dataset,
)
from facelab.data.skipped import SkipLog
from facelab.tasks import get_task
from tests.conftest import shared_data

SIZE = 8
ORIENTATION = get_task("orientation")
GENDER = get_task("gender")


def _exp(**changes):
    knobs = dict(image_size=SIZE, batch_size=4, cache="none", seed=3)
    knobs.update(changes)
    return Experiment(**knobs)


def _only_flip(**changes):
    return _exp(
        augment=True, rotation=0.0, shift=0.0, zoom=0.0, brightness=0.0, flip=True, **changes
    )


def _grey(tmp_path, name, value):
    path = tmp_path / name
    cv2.imwrite(str(path), np.full((12, 12), value, np.uint8))
    return str(path)


def _half_bright(side):
    """A (SIZE, SIZE, 3) float image whose left or right half is bright (light from that side)."""
    image = np.full((SIZE, SIZE, 3), 40.0, np.float32)
    if side == "left":
        image[:, : SIZE // 2] = 220.0
    elif side == "right":
        image[:, SIZE // 2 :] = 220.0
    else:
        image[:] = 130.0
    return image


def _collect(ds):
    images, targets = [], []
    for x, y in ds.as_numpy_iterator():
        images.append(x)
        targets.append(y)
    return np.concatenate(images), np.concatenate(targets)


def test_every_supported_format_decodes_to_rgb_float(tmp_path):
    red_bgr = np.zeros((10, 14, 3), np.uint8)
    red_bgr[..., 2] = 250
    cv2.imwrite(str(tmp_path / "red.jpg"), red_bgr)
    cv2.imwrite(str(tmp_path / "red.png"), red_bgr)
    cv2.imwrite(str(tmp_path / "grey.pgm"), np.full((16, 12), 90, np.uint8))
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((16, 12), 90, np.uint8))
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((9, 9, 3), 65535, np.uint16))
    rgba = np.zeros((9, 9, 4), np.uint8)
    rgba[..., 2] = rgba[..., 3] = 255
    cv2.imwrite(str(tmp_path / "alpha.png"), rgba)
    names = ["red.jpg", "red.png", "grey.pgm", "grey.png", "deep.png", "alpha.png"]

    ds = make_dataset([str(tmp_path / n) for n in names], None, _exp(), ORIENTATION, training=False)
    images = np.concatenate(list(ds.as_numpy_iterator()))

    assert images.shape == (6, SIZE, SIZE, 3) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 255
    for red in images[[0, 1, 5]]:  # RGB order, not OpenCV's BGR
        assert red[..., 0].mean() > 240 and red[..., 2].mean() < 15
    np.testing.assert_allclose(images[2], 90, atol=1)
    np.testing.assert_allclose(images[3], 90, atol=1)
    np.testing.assert_allclose(images[4], 255)


def test_unreadable_files_are_skipped_and_recorded(tmp_path):
    good = [_grey(tmp_path, f"g{i}.png", 10 * i) for i in range(3)]
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    paths = [good[0], str(corrupt), good[1], str(empty), good[2]]
    targets = encode_labels(["left", "right", "center", "left", "right"], ORIENTATION)
    log = SkipLog()

    with pytest.warns(UserWarning, match="skipped"):
        images, got = _collect(
            make_dataset(paths, targets, _exp(), ORIENTATION, training=False, skip_log=log)
        )

    np.testing.assert_allclose(images[:, 0, 0, 0], [0, 10, 20])
    np.testing.assert_array_equal(got, targets[[0, 2, 4]])
    frame = log.frame()
    assert sorted(frame["file"]) == sorted([str(corrupt), str(empty)])
    assert "empty" in frame.set_index("file").loc[str(empty), "reason"]


def test_order_is_kept_without_shuffle_and_seeded_shuffle_changes_each_epoch(tmp_path):
    paths = [_grey(tmp_path, f"{i:02d}.png", 10 * i) for i in range(12)]
    targets = np.tile(encode_labels(["left", "center", "right"], ORIENTATION), (4, 1))

    images, got = _collect(make_dataset(paths, targets, _exp(), ORIENTATION, training=False))
    np.testing.assert_allclose(images[:, 0, 0, 0], np.arange(12) * 10)
    np.testing.assert_array_equal(got, targets)

    shuffled = make_dataset(paths, targets, _exp(), ORIENTATION, training=True)
    first, first_targets = _collect(shuffled)
    second, _ = _collect(shuffled)
    again, _ = _collect(make_dataset(paths, targets, _exp(), ORIENTATION, training=True))
    order = first[:, 0, 0, 0] / 10
    assert sorted(order) == list(range(12)) and list(order) != list(range(12))
    assert list(second[:, 0, 0, 0]) != list(first[:, 0, 0, 0])
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(first_targets, targets[order.astype(int)])  # labels follow images


def test_horizontal_flip_swaps_left_and_right_for_orientation():
    images = np.stack([_half_bright("left"), _half_bright("right"), _half_bright("center")])
    targets = encode_labels(["left", "right", "center"], ORIENTATION)

    flipped, labels = augment_batch(
        images, targets, _only_flip(), ORIENTATION, seed_or_generator=0, flip_probability=1.0
    )

    np.testing.assert_allclose(flipped.numpy(), images[:, :, ::-1], atol=1e-3)
    assert flipped[0, :, SIZE // 2 :].numpy().mean() > flipped[0, :, : SIZE // 2].numpy().mean()
    names = [ORIENTATION.classes[i] for i in labels.numpy().argmax(axis=1)]
    assert names == ["right", "left", "center"]


def test_horizontal_flip_keeps_gender_labels():
    images = np.stack([_half_bright("left"), _half_bright("right")])
    targets = encode_labels(["female", "male"], GENDER)

    flipped, labels = augment_batch(images, targets, _only_flip(), GENDER, 0, flip_probability=1.0)

    np.testing.assert_allclose(flipped.numpy(), images[:, :, ::-1], atol=1e-3)
    np.testing.assert_array_equal(labels.numpy(), targets)


def test_random_flips_swap_the_label_of_exactly_the_flipped_images():
    images = np.stack([_half_bright("left")] * 64)
    targets = encode_labels(["left"] * 64, ORIENTATION)
    exp = _exp(augment=True, rotation=8.0, shift=0.05, zoom=0.05, brightness=0.1, flip=True)

    out, labels = augment_batch(images, targets, exp, ORIENTATION, 11)

    out = out.numpy()
    bright_right = out[:, :, SIZE // 2 :].mean(axis=(1, 2, 3)) > out[:, :, : SIZE // 2].mean(
        axis=(1, 2, 3)
    )
    names = np.array(ORIENTATION.classes)[labels.numpy().argmax(axis=1)]
    assert 10 < bright_right.sum() < 54  # about half flipped
    np.testing.assert_array_equal(names == "right", bright_right)
    assert out.min() >= 0 and out.max() <= 255


def test_augmentation_is_deterministic_for_a_fixed_seed(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, SIZE, SIZE, 3)).astype(np.float32)
    targets = encode_labels(["left", "right", "center", "left"], ORIENTATION)
    exp = _exp(augment=True, rotation=20.0, shift=0.1, zoom=0.1, brightness=0.2)

    a = augment_batch(images, targets, exp, ORIENTATION, 5)
    b = augment_batch(images, targets, exp, ORIENTATION, 5)
    c = augment_batch(images, targets, exp, ORIENTATION, 6)

    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    assert not np.allclose(a[0].numpy(), c[0].numpy())
    assert not np.allclose(a[0].numpy(), images)

    paths = [_grey(tmp_path, f"{i}.png", 20 * i) for i in range(4)]
    runs = [
        _collect(make_dataset(paths, targets, exp, ORIENTATION, training=True)) for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_disk_cache_is_reused_and_invalidated_by_image_size(tmp_path):
    paths = [_grey(tmp_path, f"{i}.png", 50) for i in range(3)]
    cache = tmp_path / "cache"
    exp = _exp(cache=str(cache))
    first = np.concatenate(list(make_dataset(paths, None, exp, GENDER, training=False)))
    assert len(list(cache.glob("*.index"))) == 1
    for path in paths:  # the files change; a cached run must not notice
        _grey(tmp_path, os.path.basename(path), 200)

    reused = np.concatenate(list(make_dataset(paths, None, exp, GENDER, training=False)))
    resized = np.concatenate(
        list(make_dataset(paths, None, exp.replace(image_size=SIZE * 2), GENDER, training=False))
    )

    np.testing.assert_array_equal(reused, first)
    assert resized.shape == (3, SIZE * 2, SIZE * 2, 3)
    np.testing.assert_allclose(resized, 200)
    assert len(list(cache.glob("*.index"))) == 2


def test_disk_cache_left_locked_by_a_killed_run_is_rebuilt(tmp_path):
    paths = [_grey(tmp_path, "a.png", 70)]
    cache = tmp_path / "cache"
    cache.mkdir()
    prefix = cache_prefix(cache, paths, SIZE)
    (cache / f"{prefix.name}_0.lockfile").write_text("Created at: 0")

    images = np.concatenate(
        list(make_dataset(paths, None, _exp(cache=str(cache)), GENDER, training=False))
    )

    np.testing.assert_allclose(images, 70)


def test_predict_dataset_flags_bad_files_and_keeps_paths_aligned(tmp_path):
    paths = [
        _grey(tmp_path, "a.png", 10),
        str(tmp_path / "missing.jpg"),
        _grey(tmp_path, "c.png", 30),
    ]
    log = SkipLog()

    with pytest.warns(UserWarning, match="missing.jpg"):
        batches = list(make_predict_dataset(paths, SIZE, 2, skip_log=log).as_numpy_iterator())

    images = np.concatenate([b[0] for b in batches])
    assert [p.decode() for b in batches for p in b[1]] == paths
    assert [bool(ok) for b in batches for ok in b[2]] == [True, False, True]
    assert images.shape == (3, SIZE, SIZE, 3) and images.dtype == np.float32
    np.testing.assert_allclose(images[[0, 2], 0, 0, 0], [10, 30])
    assert list(log.frame()["file"]) == [paths[1]]


def test_encode_labels_one_hot_multi_hot_and_unknown_label():
    np.testing.assert_array_equal(
        encode_labels(["right", "left"], ORIENTATION), [[0, 0, 1], [1, 0, 0]]
    )
    attributes = get_task("attributes")
    multi = encode_labels(["Smiling|Male", ""], attributes)
    assert multi.dtype == np.float32 and multi.shape == (2, 40)
    assert set(np.flatnonzero(multi[0])) == {
        attributes.classes.index("Smiling"),
        attributes.classes.index("Male"),
    }
    assert multi[1].sum() == 0
    with pytest.raises(ValueError, match=r"'up'.*\['left', 'center', 'right'\]"):
        encode_labels(["left", "up"], ORIENTATION)


def test_real_extended_yale_b_pgms_decode_as_grey_rgb():
    pgms = sorted(shared_data("yaleb").glob("yaleB01/yaleB01_P00A*.pgm"))[:3]

    images = np.concatenate(list(make_dataset(pgms, None, _exp(), ORIENTATION, training=False)))

    assert images.shape == (3, SIZE, SIZE, 3)
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # grey stays grey
    assert 0 < images.mean() < 255
