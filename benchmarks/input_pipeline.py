"""Input-pipeline benchmark on Extended Yale B: facelab's tf.data pipeline against ImageDataGenerator.

    python benchmarks/input_pipeline.py [--images N] [--size 128] [--batch-size 32] [--rounds 2]

Measures, side by side in one run (the machine is shared and noisy, so compare ratios):
  (a) the reference ``ImageDataGenerator(rotation 20, shifts 0.1, zoom 0.1, flip, nearest fill)
      .flow_from_directory`` over the images converted to JPEG in a <class>/<file>.jpg tree;
  (b) ``make_dataset`` with the same transforms (fused, one resampling per image), memory cache,
      after one warm-up epoch; target: (b) >= 4x (a);
  (c) training FromScratch for 2 epochs from files through ``make_dataset`` (cached, no
      augmentation; the first epoch decodes) against the same tensors already in memory;
      target: ratio >= 0.95. Reported as the best and the median of alternating rounds, with
      the CPU seconds of each and the pipelines' own CPU cost without a model;
and first-epoch decoding with OpenCV (what facelab uses) against TensorFlow's own JPEG decoder.
Prints one JSON line with every figure and the machine; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a plain script from any folder

import cv2  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from facelab.config import Experiment  # noqa: E402
from facelab.data.pipeline import encode_labels, make_dataset  # noqa: E402
from facelab.tasks import get_task  # noqa: E402

YALEB = REPO.parent / "shared" / "data" / "yaleb"
AUGMENT_TARGET = 4.0
TRAIN_TARGET = 0.95


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the JSON line."""
    print(message, file=sys.stderr, flush=True)


def jpeg_tree(yaleb: Path, images: int, out: Path) -> tuple[list[str], list[str]]:
    """Convert ``images`` Yale B PGMs (spread evenly over the set) to ``out/<class>/<file>.jpg``."""
    from facelab.data.yaleb import read_yaleb

    frame = read_yaleb(yaleb)
    if images < len(frame):
        frame = frame.iloc[np.linspace(0, len(frame) - 1, images).round().astype(int)]
    paths, labels = [], []
    for path, label in zip(frame["path"], frame["label"], strict=True):
        target = out / label / (Path(path).stem + ".jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(
            str(target), cv2.imread(path, cv2.IMREAD_UNCHANGED), [cv2.IMWRITE_JPEG_QUALITY, 95]
        )
        paths.append(str(target))
        labels.append(label)
    return paths, labels


def time_epoch(batches, count: int) -> float:
    """Images per second over one pass of an iterable of image batches or (images, ...) tuples."""
    start = time.perf_counter()
    seen = 0
    for batch in batches:
        seen += len(batch[0] if isinstance(batch, tuple) else batch)
    elapsed = time.perf_counter() - start
    if seen != count:
        raise RuntimeError(f"the pass gave {seen} images, expected {count}")
    return count / elapsed


def idg_epoch(root: Path, size: int, batch_size: int, seed: int, count: int) -> float:
    """(a) One epoch of the reference ImageDataGenerator.flow_from_directory, in images/s."""
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    generator = ImageDataGenerator(
        rotation_range=20,
        width_shift_range=0.1,
        height_shift_range=0.1,
        zoom_range=0.1,
        horizontal_flip=True,
        fill_mode="nearest",
    ).flow_from_directory(
        str(root), target_size=(size, size), batch_size=batch_size, seed=seed, shuffle=True
    )
    return time_epoch((generator[i] for i in range(len(generator))), count)


def native_decode_epoch(paths: list[str], size: int, batch_size: int) -> float:
    """First-epoch decoding with TensorFlow's own decoder and area resize, in images/s."""

    def load(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return tf.cast(tf.round(tf.image.resize(image, (size, size), method="area")), tf.uint8)

    ds = tf.data.Dataset.from_tensor_slices(paths)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size).map(lambda x: tf.cast(x, tf.float32)).prefetch(tf.data.AUTOTUNE)
    return time_epoch(ds, len(paths))


class EpochTimer(keras.callbacks.Callback):
    """Records each epoch's wall time."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def build_fromscratch_model(exp, task):
    """FromScratch compiled with SGD (the reference's choice), from ``facelab.models.scratch``."""
    from facelab.models.scratch import build_fromscratch

    keras.utils.set_random_seed(exp.seed)
    model = build_fromscratch(
        input_shape=(exp.image_size, exp.image_size, 3),
        num_classes=task.num_classes,
        conv_dropout=exp.conv_dropout,
        dense_dropout=exp.dense_dropout,
        dense_units=exp.dense_units,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=exp.lr, momentum=exp.momentum),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def main(argv: list[str] | None = None) -> dict:
    """Run every measurement and print one JSON line; returns the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=0, help="images to use (0: all lit ones)")
    parser.add_argument("--size", type=int, default=128, help="square image side in pixels")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2, help="training epochs in (c)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating repeats of (a)/(b)")
    parser.add_argument("--train-rounds", type=int, default=3, help="alternating repeats of (c)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--yaleb", type=Path, default=YALEB, help="Extended Yale B folder")
    parser.add_argument("--no-train", action="store_true", help="skip (c)")
    args = parser.parse_args(argv)
    if not args.yaleb.is_dir():
        result = {"skipped": f"{args.yaleb} not found; pass --yaleb DIR"}
        print(json.dumps(result))
        return result

    task = get_task("light")
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="facelab-bench-") as tmp:
        root = Path(tmp)
        paths, labels = jpeg_tree(args.yaleb, args.images or 10**9, root)
        n = len(paths)
        targets = encode_labels(labels, task)
        log(f"{n} Yale B images as JPEG in {root}, {args.size} px, batch {args.batch_size}")
        exp = Experiment(
            task="light",
            image_size=args.size,
            batch_size=args.batch_size,
            seed=args.seed,
            augment=True,
            rotation=20.0,
            shift=0.1,
            zoom=0.1,
            brightness=0.0,  # the reference generator has no brightness change
            flip=True,
            cache="memory",
        )

        # Decoding alone (first epoch, nothing cached): OpenCV as facelab does, and TF native.
        plain = exp.replace(augment=False, cache="none")
        decode_cv = time_epoch(make_dataset(paths, None, plain, task, training=False), n)
        decode_cv = max(
            decode_cv, time_epoch(make_dataset(paths, None, plain, task, training=False), n)
        )
        decode_tf = max(native_decode_epoch(paths, args.size, args.batch_size) for _ in range(2))
        log(f"decode: opencv {decode_cv:.0f} img/s, tf native {decode_tf:.0f} img/s")

        # (a) and (b), alternating so both see the same machine load; the best round counts.
        augmented = make_dataset(paths, targets, exp, task, training=True)
        first_epoch = time_epoch(augmented, n)  # warm-up: decodes and fills the cache
        idg, fused = [], []
        for round_ in range(args.rounds):
            idg.append(idg_epoch(root, args.size, args.batch_size, args.seed, n))
            fused.append(max(time_epoch(augmented, n) for _ in range(3)))
            log(
                f"round {round_ + 1}: ImageDataGenerator {idg[-1]:.0f} img/s, facelab {fused[-1]:.0f}"
            )
        result.update(
            images=n,
            size=args.size,
            batch_size=args.batch_size,
            decode_opencv_images_per_s=round(decode_cv),
            decode_tf_native_images_per_s=round(decode_tf),
            facelab_first_epoch_images_per_s=round(first_epoch),
            idg_images_per_s=round(max(idg)),
            facelab_augment_images_per_s=round(max(fused)),
            augment_speedup=round(max(fused) / max(idg), 2),
            idg_rounds=[round(v) for v in idg],
            facelab_rounds=[round(v) for v in fused],
        )

        if not args.no_train:
            result.update(
                train_comparison(paths, targets, exp, task, args.epochs, args.train_rounds, n)
            )

    result.update(
        targets={"augment_speedup": AUGMENT_TARGET, "train_ratio": TRAIN_TARGET},
        cpu_count=os.cpu_count(),
        platform=platform.platform(),
        processor=platform.processor() or platform.machine(),
        python=platform.python_version(),
        tensorflow=tf.__version__,
        keras=keras.__version__,
        opencv=cv2.__version__,
    )
    print(json.dumps(result))
    return result


def train_comparison(paths, targets, exp, task, epochs: int, rounds: int, n: int) -> dict:
    """(c) FromScratch images/s: from files through make_dataset vs the same tensors in memory.

    Each round fits ``epochs`` epochs from memory, then from a fresh ``make_dataset`` (so its first
    epoch decodes every file). Wall-clock figures are the best round; CPU seconds (this process,
    all threads) are the median round, steadier than wall time on a shared machine.
    """
    train_exp = exp.replace(augment=False, cache="memory", lr=0.005)
    loaded = list(make_dataset(paths, targets, train_exp, task, training=False).as_numpy_iterator())
    x = np.concatenate([batch[0] for batch in loaded])
    y = np.concatenate([batch[1] for batch in loaded])

    def in_memory():
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(exp.batch_size)
        return ds.prefetch(tf.data.AUTOTUNE)

    def from_files():
        return make_dataset(paths, targets, train_exp, task, training=True)

    # The pipelines alone, no model: CPU seconds for `epochs` epochs, the first one decoding.
    pipeline_cpu = {}
    for name, make in (("memory", in_memory), ("files", from_files)):
        ds, start_cpu = make(), time.process_time()
        for _ in range(epochs):
            for _ in ds:
                pass
        pipeline_cpu[name] = time.process_time() - start_cpu
    overhead = pipeline_cpu["files"] - pipeline_cpu["memory"]

    # Keras says "ran out of data" at the end of a first epoch whose length it cannot know
    # beforehand (files that fail to decode are dropped); expected here, so not shown.
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    model = build_fromscratch_model(train_exp, task)
    model.fit(in_memory().take(2), epochs=1, verbose=0, shuffle=False)  # trace it, untimed
    wall = {"memory": [], "files": []}
    cpu = {"memory": [], "files": []}
    last_epoch = {"memory": [], "files": []}
    for _ in range(rounds):
        for name, make in (("memory", in_memory), ("files", from_files)):
            timer = EpochTimer()
            start, start_cpu = time.perf_counter(), time.process_time()
            model.fit(make(), epochs=epochs, verbose=0, shuffle=False, callbacks=[timer])
            wall[name].append(epochs * n / (time.perf_counter() - start))
            cpu[name].append(time.process_time() - start_cpu)
            last_epoch[name].append(n / timer.times[-1])
            log(
                f"train {name}: {wall[name][-1]:.0f} img/s, {cpu[name][-1]:.1f} CPU s "
                f"(last epoch {last_epoch[name][-1]:.0f} img/s)"
            )
    best = {name: max(values) for name, values in wall.items()}
    cpu_median = {name: float(np.median(values)) for name, values in cpu.items()}
    return {
        "train_epochs": epochs,
        "train_in_memory_images_per_s": round(best["memory"]),
        "train_from_files_images_per_s": round(best["files"]),
        "train_ratio": round(best["files"] / best["memory"], 3),
        "train_ratio_median": round(np.median(wall["files"]) / np.median(wall["memory"]), 3),
        "train_ratio_cached_epoch": round(max(last_epoch["files"]) / max(last_epoch["memory"]), 3),
        "train_in_memory_cpu_s": round(cpu_median["memory"], 2),
        "train_from_files_cpu_s": round(cpu_median["files"], 2),
        "train_cpu_ratio": round(cpu_median["memory"] / cpu_median["files"], 3),
        "pipeline_cpu_s_files": round(pipeline_cpu["files"], 3),
        "pipeline_cpu_s_memory": round(pipeline_cpu["memory"], 3),
        # If the files pipeline's extra CPU work were not hidden on a spare core at all:
        "train_ratio_worst_case": round(
            cpu_median["memory"] / (cpu_median["memory"] + overhead), 3
        ),
        "train_in_memory_rounds": [round(v) for v in wall["memory"]],
        "train_from_files_rounds": [round(v) for v in wall["files"]],
    }


if __name__ == "__main__":
    main()
