"""tf.data input pipeline: decode, resize, cache, shuffle, batch, fused augmentation, prefetch.

Every image goes through ``facelab.data.images`` (OpenCV inside ``tf.numpy_function``), so PGM,
16-bit, alpha, CMYK and EXIF-rotated files read the same in training and prediction, and one
resize function (area when shrinking) is used everywhere. Files that cannot be read are skipped
and recorded in a ``SkipLog``, never fatal. Images stay uint8 until they are batched.

Augmentation is fused: per image ONE affine matrix (rotation, shift, zoom and horizontal flip
about the centre) is built in TensorFlow, vectorised over the batch, and applied by one
``cv2.warpAffine`` per image (one resampling, not one per transform), then a brightness factor;
a flip swaps the labels of the classes ``Task.flip_swap`` names (left <-> right).
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from facelab.config import Experiment
from facelab.data.images import ImageReadError, read_image, resize_image
from facelab.data.skipped import SkipLog
from facelab.machine import usable_cores
from facelab.tasks import Task, get_task

AUTOTUNE = tf.data.AUTOTUNE

# Files decoded per numpy_function call: fewer calls, less overhead (about 2x faster than one by one).
DECODE_CHUNK = 16

# Batches decoded at once when predicting: each is held in memory (256 images of 224 px: 150 MB).
MAX_DECODE_BATCHES = 8

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
    if targets is None:
        # A placeholder carried along and dropped at the end (zero-width columns crash TF 2.21).
        columns = np.zeros((len(paths), 1), np.float32)
    else:
        columns = np.asarray(targets, np.float32)
        if columns.shape != (len(paths), task.num_classes):
            raise ValueError(
                f"targets have shape {columns.shape}, expected ({len(paths)}, {task.num_classes}): "
                f"one row per path and one column per class of task {task.name!r} "
                "(use encode_labels)"
            )
    shuffle = training if shuffle is None else shuffle
    size = exp.image_size

    buffer = max(1024, SHUFFLE_BUFFER_BYTES // (size * size * 3))
    if shuffle and len(paths) > buffer:
        order = np.random.default_rng(exp.seed).permutation(len(paths))
        paths = [paths[i] for i in order]
        columns = columns[order]

    chunks = tf.data.Dataset.from_tensor_slices(paths).batch(DECODE_CHUNK)
    chunks = chunks.map(
        lambda chunk: _load(chunk, size), num_parallel_calls=AUTOTUNE, deterministic=True
    )
    chunks = _cache(chunks, exp.cache, paths, size)  # targets stay out: a cache is per image set
    labels = tf.data.Dataset.from_tensor_slices((paths, columns)).batch(DECODE_CHUNK)
    record = _SkipRecorder(skip_log)

    def readable(loaded, labelled):
        (images, ok, reasons), (chunk_paths, chunk_columns) = loaded, labelled
        ok = tf.cond(tf.reduce_all(ok), lambda: ok, lambda: record.op(chunk_paths, ok, reasons))
        return tf.boolean_mask(images, ok), tf.boolean_mask(chunk_columns, ok)

    ds = tf.data.Dataset.zip((chunks, labels)).map(readable).unbatch()
    if shuffle:
        ds = ds.shuffle(min(len(paths), buffer), seed=exp.seed, reshuffle_each_iteration=True)
    ds = ds.batch(exp.batch_size)
    if training and exp.augment:
        seeds = tf.data.Dataset.random(seed=exp.seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda batch, seed: augment_batch(batch[0], batch[1], exp, task, seed),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
    else:
        ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y))
    if targets is None:
        ds = ds.map(lambda x, y: x)
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
    record = _SkipRecorder(skip_log)

    def batch_paths(index: np.int64) -> np.ndarray:
        # Batches of paths looked up by number: a string tensor of every path would cost about
        # 150 bytes per image on top of the list (30 MB at 200,000 images).
        start = int(index) * batch_size
        return np.array(paths[start : start + batch_size], dtype=object)

    def load(index):
        batch = tf.numpy_function(batch_paths, [index], tf.string, stateful=False)
        batch.set_shape([None])
        images, ok, reasons = _load(batch, image_size)
        return tf.cast(images, tf.float32), batch, record.op(batch, ok, reasons)

    batches = -(-len(paths) // batch_size)
    ds = tf.data.Dataset.range(batches).map(
        load, num_parallel_calls=min(batches, usable_cores(), MAX_DECODE_BATCHES), deterministic=True
    )
    # Fixed parallelism and prefetch, autotuning off: with a model running beside it, an
    # autotuned iterator often took about half a second to shut down at the end of the run.
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(2).with_options(options)


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
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        images = tf.cast(images, tf.float32)
    targets = None if targets is None else tf.cast(targets, tf.float32)
    seeds = tf.random.experimental.stateless_split(_seed_pair(seed_or_generator), num=5)
    batch = tf.shape(images)[0]

    def uniform(i: int, limit: float, shape=()) -> tf.Tensor:
        return tf.random.stateless_uniform([*shape, batch], seeds[i], minval=-limit, maxval=limit)

    flip = None
    if exp.flip:
        flip = tf.random.stateless_uniform([batch], seeds[0]) < flip_probability
    if exp.rotation or exp.shift or exp.zoom or exp.flip:
        mirror = tf.ones([batch]) if flip is None else tf.where(flip, -1.0, 1.0)
        matrices = _affine_matrices(
            angle=uniform(1, math.radians(exp.rotation)),
            scale=1.0 + uniform(2, exp.zoom),
            mirror=mirror,
            shifts=uniform(3, exp.shift, shape=[2]),
            size=tf.shape(images)[1:3],
        )
        warped = tf.numpy_function(_warp, [images, matrices], images.dtype, stateful=False)
        images = tf.ensure_shape(warped, images.shape)
    images = tf.cast(images, tf.float32)
    if exp.brightness:
        images = images * (1.0 + uniform(4, exp.brightness))[:, None, None, None]
    images = tf.clip_by_value(images, 0.0, 255.0)

    if targets is not None and flip is not None and task.flip_swap:
        perm = task.flip_permutation()
        inverse = [perm.index(j) for j in range(len(perm))]  # class j comes from class inverse[j]
        targets = tf.where(flip[:, None], tf.gather(targets, inverse, axis=1), targets)
    return images, targets


def _affine_matrices(angle, scale, mirror, shifts, size) -> tf.Tensor:
    """(B, 2, 3) affine matrices mapping each output pixel (x, y) to the input point it samples."""
    # input = M @ (output - centre) + centre + shift, with M = scale * rotation @ diag(mirror, 1):
    # rotation, zoom and flip all about the image centre, so a pure flip is exactly x -> W-1-x.
    height, width = tf.cast(size[0], tf.float32), tf.cast(size[1], tf.float32)
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    a0, a1, b0, b1 = cos * mirror, -sin, sin * mirror, cos
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    a2 = cx + shifts[0] * width - a0 * cx - a1 * cy
    b2 = cy + shifts[1] * height - b0 * cx - b1 * cy
    return tf.reshape(tf.stack([a0, a1, a2, b0, b1, b2], axis=1), [-1, 2, 3])


def _warp(images: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Resample each image once (bilinear, borders filled with the nearest pixel).

    OpenCV's warpAffine: about 7x faster per core here than TF's ImageProjectiveTransformV3.
    """
    out = np.empty_like(images)
    height, width = images.shape[1:3]
    for image, matrix, target in zip(images, matrices, out, strict=True):
        cv2.warpAffine(
            image,
            matrix,
            (width, height),
            dst=target,
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
    return out


def _seed_pair(seed_or_generator) -> tf.Tensor:
    if isinstance(seed_or_generator, tf.random.Generator):
        return seed_or_generator.make_seeds(1)[:, 0]
    if isinstance(seed_or_generator, int):
        return tf.constant([seed_or_generator, 0], tf.int64)
    seed = tf.convert_to_tensor(seed_or_generator)
    return tf.reshape(seed, [2]) if seed.shape.rank else tf.stack([seed, tf.zeros_like(seed)])


def _load(paths: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(uint8 (k, size, size, 3) images, ok (k,), reasons (k,)) for k paths; failures are black."""
    images, ok, reasons = tf.numpy_function(
        lambda p: _read_resized(p, size), [paths], [tf.uint8, tf.bool, tf.string], stateful=False
    )
    images.set_shape([None, size, size, 3])
    ok.set_shape([None])
    reasons.set_shape([None])
    return images, ok, reasons


def _read_resized(paths: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images = np.zeros((len(paths), size, size, 3), np.uint8)
    ok = np.zeros(len(paths), bool)
    reasons = np.full(len(paths), b"", object)
    for i, path in enumerate(paths):
        try:
            images[i] = read_image(os.fsdecode(path), size)
            ok[i] = True
        except ImageReadError as err:
            reasons[i] = err.reason.encode()
        except Exception as err:  # an unexpected decoder failure still only skips this file
            reasons[i] = f"cannot decode ({type(err).__name__}: {err})".encode()
    return images, ok, reasons


class _SkipRecorder:
    """Records each failed path once in a SkipLog (epochs repeat; files do not)."""

    def __init__(self, skip_log: SkipLog | None):
        self.skip_log = SkipLog() if skip_log is None else skip_log
        self.seen: set[bytes] = set()
        self.lock = threading.Lock()

    def __call__(self, paths: np.ndarray, ok: np.ndarray, reasons: np.ndarray) -> np.ndarray:
        for path, good, reason in zip(
            np.atleast_1d(paths), np.atleast_1d(ok), np.atleast_1d(reasons), strict=True
        ):
            if not good:
                with self.lock:
                    if path in self.seen:
                        continue
                    self.seen.add(path)
                self.skip_log.add(os.fsdecode(path), reason.decode())
        return ok

    def op(self, paths: tf.Tensor, ok: tf.Tensor, reasons: tf.Tensor) -> tf.Tensor:
        """Record the failures among a vector of ``paths``; returns ``ok`` unchanged."""
        result = tf.numpy_function(self, [paths, ok, reasons], tf.bool)
        return tf.ensure_shape(result, ok.shape)


def cache_prefix(folder: str | os.PathLike, paths: Sequence[str], image_size: int) -> Path:
    """The on-disk cache file prefix for these paths at this size: a hash of both (and the decoder)."""
    key = f"facelab-cache-v{CACHE_VERSION}\nchunk {DECODE_CHUNK}\nsize {image_size}\n"
    digest = hashlib.sha256(key.encode())
    for path in paths:
        digest.update(os.path.abspath(path).encode("utf-8", "surrogateescape") + b"\n")
    return Path(folder) / f"images_{image_size}px_{digest.hexdigest()[:20]}"


def _cache(ds: tf.data.Dataset, cache: str, paths: Sequence[str], size: int) -> tf.data.Dataset:
    if cache in ("none", ""):
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
