"""tf.data input pipeline: decode, resize, cache, shuffle, batch, fused augmentation, prefetch.

Every image goes through ``facelab.data.images`` (OpenCV inside ``tf.numpy_function``), so PGM,
16-bit, alpha, CMYK and EXIF-rotated files read the same in training and prediction, and one
resize function (area when shrinking) is used everywhere. Files that cannot be read are skipped
and recorded in a ``SkipLog``, never fatal. Images stay uint8 until they are batched.

Augmentation is fused: per image ONE affine matrix (rotation, shift, zoom and horizontal flip
about the centre) is applied by one projective-transform call per batch, then a brightness
factor; a flip swaps the labels of the classes ``Task.flip_swap`` names (left <-> right).
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from facelab.config import Experiment
from facelab.data.images import ImageReadError, read_image, resize_image
from facelab.data.skipped import SkipLog
from facelab.tasks import Task, get_task

AUTOTUNE = tf.data.AUTOTUNE

# Bump when decoding or resizing changes, so on-disk caches written before are not reused.
CACHE_VERSION = 1
# The shuffle buffer holds at most this many bytes of uint8 images (and at least 1,024 images);
# a larger training set is put in a seeded random order once before caching, so that the bounded
# buffer still mixes classes that the manifest lists one after another.
SHUFFLE_BUFFER_BYTES = 512 * 2**20


def encode_labels(labels: Sequence[str], task: Task) -> np.ndarray:
    """One-hot (N, C) float32 targets; for a multi-label task, ``|``-joined names become multi-hot."""
    task = get_task(task) if isinstance(task, str) else task
    index = {name: i for i, name in enumerate(task.classes)}
    targets = np.zeros((len(labels), task.num_classes), np.float32)
    for row, label in enumerate(labels):
        if not isinstance(label, str):
            raise ValueError(
                f"label #{row} is {label!r}, not a class name; every sample needs a label of task "
                f"{task.name!r}, one of {list(task.classes)}"
            )
        names = [n for n in label.split("|") if n] if task.multilabel else [label]
        for name in names:
            if name not in index:
                raise ValueError(
                    f"label #{row} {name!r} is not a class of task {task.name!r}; "
                    f"expected one of {list(task.classes)}"
                )
            targets[row, index[name]] = 1.0
    return targets


def make_dataset(
    paths: Sequence[str],
    targets: np.ndarray | None,
    exp: Experiment,
    task: Task,
    *,
    training: bool,
    skip_log: SkipLog | None = None,
    shuffle: bool | None = None,
) -> tf.data.Dataset:
    """Batches of (images float32 0..255 (B, S, S, 3), targets float32), or images alone without targets.

    Shuffles (seeded by ``exp.seed``, new order each epoch) when ``shuffle`` is True, or by default
    when ``training``; augments only when ``training and exp.augment``. ``exp.cache`` is "memory",
    "none" or a folder for an on-disk cache reused by later runs with the same paths and size.
    """
    task = get_task(task) if isinstance(task, str) else task
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("no image paths given; the manifest split selected no rows")
    if targets is not None:
        targets = np.asarray(targets, np.float32)
        if targets.ndim != 2 or targets.shape != (len(paths), task.num_classes):
            raise ValueError(
                f"targets have shape {targets.shape}, expected ({len(paths)}, {task.num_classes}): "
                f"one row per path and one column per class of task {task.name!r} "
                "(use encode_labels)"
            )
    shuffle = training if shuffle is None else shuffle
    size = exp.image_size
    skip_log = SkipLog() if skip_log is None else skip_log

    buffer = max(1024, SHUFFLE_BUFFER_BYTES // (size * size * 3))
    if shuffle and len(paths) > buffer:
        order = np.random.default_rng(exp.seed).permutation(len(paths))
        paths = [paths[i] for i in order]
        targets = None if targets is None else targets[order]

    images = tf.data.Dataset.from_tensor_slices(paths).map(
        lambda path: _load(path, size), num_parallel_calls=AUTOTUNE, deterministic=True
    )
    images = _cache(images, exp.cache, paths, size)

    columns = [images, tf.data.Dataset.from_tensor_slices(paths)]
    if targets is not None:
        columns.append(tf.data.Dataset.from_tensor_slices(targets))
    ds = tf.data.Dataset.zip(tuple(columns))
    ds = ds.filter(_recorder(skip_log))
    if targets is None:
        ds = ds.map(lambda loaded, path: loaded[0])
    else:
        ds = ds.map(lambda loaded, path, target: (loaded[0], target))

    if shuffle:
        ds = ds.shuffle(min(len(paths), buffer), seed=exp.seed, reshuffle_each_iteration=True)
    ds = ds.batch(exp.batch_size)
    if training and exp.augment:
        seeds = tf.data.Dataset.random(seed=exp.seed, rerandomize_each_iteration=True).batch(2)
        if targets is None:
            ds = tf.data.Dataset.zip((ds, seeds)).map(
                lambda x, seed: augment_batch(x, None, exp, task, seed)[0],
                num_parallel_calls=AUTOTUNE,
                deterministic=True,
            )
        else:
            ds = tf.data.Dataset.zip((ds, seeds)).map(
                lambda batch, seed: augment_batch(batch[0], batch[1], exp, task, seed),
                num_parallel_calls=AUTOTUNE,
                deterministic=True,
            )
    elif targets is None:
        ds = ds.map(lambda x: tf.cast(x, tf.float32))
    else:
        ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y))
    return ds.prefetch(AUTOTUNE)


def make_predict_dataset(
    paths: Sequence[str], image_size: int, batch_size: int, skip_log: SkipLog | None = None
) -> tf.data.Dataset:
    """Streaming batches of (images float32, paths as bytes, ok flags); unreadable files are flagged, not dropped.

    A file that cannot be read gives a black image with ``ok`` False (and a row in ``skip_log``), so
    batch positions line up with ``paths``. Nothing is cached: memory use does not grow with ``paths``.
    """
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("no image paths given to predict on")
    record = _recorder(SkipLog() if skip_log is None else skip_log)

    def load(path):
        loaded = _load(path, image_size)
        return loaded[0], path, record(loaded, path)

    ds = tf.data.Dataset.from_tensor_slices(paths).map(
        load, num_parallel_calls=AUTOTUNE, deterministic=True
    )
    ds = ds.batch(batch_size).map(lambda x, p, ok: (tf.cast(x, tf.float32), p, ok))
    return ds.prefetch(AUTOTUNE)


def augment_batch(
    images: tf.Tensor,
    targets: tf.Tensor | None,
    exp: Experiment,
    task: Task,
    seed_or_generator: int | tf.Tensor | tf.random.Generator,
    *,
    flip_probability: float = 0.5,
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Randomly rotate, shift, zoom, flip (one resampling per image) and brighten a batch.

    ``exp.rotation`` (degrees), ``exp.shift`` (fraction of the side), ``exp.zoom``, ``exp.flip``
    (with ``flip_probability``) and ``exp.brightness`` set the ranges; a flipped image's target gets
    the task's flip permutation (left <-> right). Same seed, same result. Returns float32 0..255.
    """
    task = get_task(task) if isinstance(task, str) else task
    images = tf.cast(images, tf.float32)
    targets = None if targets is None else tf.cast(targets, tf.float32)
    seed = _seed_pair(seed_or_generator)
    batch = tf.shape(images)[0]
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    uniform_seeds = tf.random.experimental.stateless_split(seed, num=5)

    def uniform(i: int, limit: float) -> tf.Tensor:
        return tf.random.stateless_uniform(
            [batch], uniform_seeds[i], minval=-limit, maxval=limit, dtype=tf.float32
        )

    flip = None
    if exp.flip:
        flip = tf.random.stateless_uniform([batch], uniform_seeds[0]) < flip_probability
    if exp.rotation or exp.shift or exp.zoom or exp.flip:
        angle = uniform(1, math.radians(exp.rotation))
        scale = 1.0 + uniform(2, exp.zoom)
        shifts = tf.random.stateless_uniform(
            [2, batch], uniform_seeds[3], minval=-exp.shift, maxval=exp.shift
        )
        mirror = tf.ones([batch]) if flip is None else tf.where(flip, -1.0, 1.0)
        transforms = _affine_transforms(angle, scale, mirror, shifts, height, width)
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=transforms,
            output_shape=tf.stack([height, width]),
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="NEAREST",
        )
    if exp.brightness:
        factor = 1.0 + uniform(4, exp.brightness)
        images = images * factor[:, None, None, None]
    images = tf.clip_by_value(images, 0.0, 255.0)

    if targets is not None and flip is not None and task.flip_swap:
        perm = task.flip_permutation()
        inverse = [perm.index(i) for i in range(len(perm))]  # new class j comes from class inverse[j]
        targets = tf.where(flip[:, None], tf.gather(targets, inverse, axis=1), targets)
    return images, targets


def _affine_transforms(angle, scale, mirror, shifts, height, width) -> tf.Tensor:
    """(B, 8) projective transforms mapping each output pixel to the input pixel it samples."""
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    # Input = M @ (output - centre) + centre + shift, with M = scale * rotation @ diag(mirror, 1).
    a0, a1 = cos * mirror, -sin
    b0, b1 = sin * mirror, cos
    cx = (tf.cast(width, tf.float32) - 1.0) / 2.0
    cy = (tf.cast(height, tf.float32) - 1.0) / 2.0
    a2 = cx + shifts[0] * tf.cast(width, tf.float32) - a0 * cx - a1 * cy
    b2 = cy + shifts[1] * tf.cast(height, tf.float32) - b0 * cx - b1 * cy
    zeros = tf.zeros_like(angle)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def _seed_pair(seed_or_generator) -> tf.Tensor:
    if isinstance(seed_or_generator, tf.random.Generator):
        return seed_or_generator.make_seeds(1)[:, 0]
    if isinstance(seed_or_generator, int):
        return tf.constant([seed_or_generator, 0], tf.int64)
    seed = tf.convert_to_tensor(seed_or_generator)
    return tf.reshape(seed, [2]) if seed.shape.rank else tf.stack([seed, tf.zeros_like(seed)])


def _load(path: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(uint8 (size, size, 3) image, ok, reason) for one path; a failure gives a black image."""
    image, ok, reason = tf.numpy_function(
        lambda p: _read_resized(p, size), [path], [tf.uint8, tf.bool, tf.string], stateful=False
    )
    image.set_shape([size, size, 3])
    ok.set_shape([])
    reason.set_shape([])
    return image, ok, reason


def _read_resized(path: bytes, size: int) -> tuple[np.ndarray, np.bool_, bytes]:
    try:
        image = resize_image(read_image(os.fsdecode(path)), size)
        return image, np.bool_(True), b""
    except ImageReadError as err:
        reason = err.reason
    except Exception as err:  # an unexpected decoder failure still only skips this file
        reason = f"cannot decode ({type(err).__name__}: {err})"
    return np.zeros((size, size, 3), np.uint8), np.bool_(False), reason.encode()


def _recorder(skip_log: SkipLog):
    """A filter predicate on ((image, ok, reason), path, ...) that records each failed path once."""
    seen: set[bytes] = set()
    lock = threading.Lock()

    def record(path: bytes, reason: bytes) -> np.bool_:
        with lock:
            if path not in seen:
                seen.add(path)
                skip_log.add(os.fsdecode(path), reason.decode())
        return np.bool_(False)

    def keep(loaded, path, *rest):
        ok, reason = loaded[1], loaded[2]
        return tf.cond(
            ok,
            lambda: tf.constant(True),
            lambda: tf.reshape(tf.numpy_function(record, [path, reason], tf.bool), []),
        )

    return keep


def cache_prefix(folder: str | os.PathLike, paths: Sequence[str], image_size: int) -> Path:
    """The on-disk cache file prefix for these paths at this size: a hash of both (and the decoder)."""
    digest = hashlib.sha256(f"facelab-cache-v{CACHE_VERSION}\n{image_size}\n".encode())
    for path in paths:
        digest.update(os.path.abspath(path).encode("utf-8", "surrogateescape") + b"\n")
    return Path(folder) / f"images_{image_size}px_{digest.hexdigest()[:20]}"


def _cache(ds: tf.data.Dataset, cache: str, paths: Sequence[str], size: int) -> tf.data.Dataset:
    if cache == "none":
        return ds
    if cache == "memory":
        return ds.cache()
    prefix = cache_prefix(cache, paths, size)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    if not Path(f"{prefix}.index").exists():
        # A run killed while writing leaves a lockfile that TF would refuse forever; clear it.
        # (Two runs writing the same new cache at the same moment are not supported.)
        for stale in prefix.parent.glob(f"{prefix.name}_*"):
            if stale.name.endswith(".lockfile") or ".tempstate" in stale.name:
                stale.unlink(missing_ok=True)
    return ds.cache(str(prefix))
