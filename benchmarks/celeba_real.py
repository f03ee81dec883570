"""Real CelebA (../shared/data/celeba-half, 7,960 faces at 89x109): gender, 40 attributes and
orientation from the real landmarks, identity-disjoint, CPU, weights=None.

    python benchmarks/celeba_real.py [--celeba DIR] [--only gender attributes orientation]
                                     [--seed 42] [--keep DIR]

Measures, one after the other, each from reading the folder to the run card:
  (a) gender (CelebA ``Male``): FromScratch and MobileNetV2 (weights=None); test accuracy and
      wall time; target >= 0.92 for the better one in <= 15 minutes;
  (b) attributes: the 40-way multi-label task with FromScratch; mean test accuracy over the
      40 attributes vs the per-attribute majority-class baseline on the same test images
      (majority taken on the training split, and on the test split itself); target >= 4 points
      above the baseline in <= 15 minutes;
  (c) orientation: labels from the real landmarks (scaled from the 178x218 frame): the fraction
      of the landmarked images the labeller keeps and the class counts; FromScratch trained on
      those labels and its agreement with them on the test identities; target keep >= 70%,
      agreement >= 0.90.
Every split is identity-disjoint (identity_CelebA.txt), 70/15/15. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a plain script from any folder

import numpy as np  # noqa: E402

from facelab.config import Experiment  # noqa: E402
from facelab.data import sources  # noqa: E402
from facelab.data.manifest import write_manifest  # noqa: E402
from facelab.data.split import split_frame  # noqa: E402
from facelab.machine import machine_info  # noqa: E402
from facelab.tasks import get_task  # noqa: E402

CELEBA = REPO.parent / "shared" / "data" / "celeba-half"
PARTS = ("gender", "attributes", "orientation")
# The runs measured; every other knob is the Experiment default.
GENDER_RUNS = {
    "fromscratch": dict(image_size=64, batch_size=32, epochs=25, optimizer="adam", lr=1e-3,
                        conv_dropout=0.2, dense_dropout=0.5, augment=True, rotation=8.0,
                        shift=0.08, zoom=0.08, brightness=0.2, flip=True, reduce_lr=3),
    "mobilenetv2": dict(image_size=64, batch_size=32, epochs=15, optimizer="adam", lr=1e-3,
                        augment=True, rotation=8.0, shift=0.08, zoom=0.08, brightness=0.2,
                        flip=True, reduce_lr=3, extra={"head": "gender"}),
}  # fmt: skip
ATTRIBUTE_RUN = dict(model="fromscratch", image_size=64, batch_size=32, epochs=25,
                     optimizer="adam", lr=1e-3, conv_dropout=0.1, dense_dropout=0.3,
                     dense_units=256, augment=True, rotation=8.0, shift=0.08, zoom=0.08,
                     brightness=0.2, flip=True, reduce_lr=3)  # fmt: skip
ORIENTATION_RUN = dict(model="fromscratch", image_size=96, batch_size=32, epochs=40,
                       optimizer="adam", lr=1e-3, conv_dropout=0.2, dense_dropout=0.5,
                       augment=True, rotation=5.0, shift=0.05, zoom=0.05, brightness=0.2,
                       flip=True, reduce_lr=3)  # fmt: skip


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def split_by_identity(frame, seed: int, stratify=None):
    """70/15/15, no identity in two splits, stratified by ``stratify`` (default: the label)."""
    by = frame if stratify is None else frame.assign(label=stratify)
    return frame.assign(split=split_frame(by, seed=seed).to_numpy())


def train(task: str, frame, out: Path, seed: int, run: str, **settings) -> dict:
    from facelab.train import run_experiment  # here: without the data, TensorFlow never loads

    manifest = write_manifest(frame, out / f"{task}_{run}.csv")
    exp = Experiment(task=task, run=run, manifest=str(manifest), output_dir=str(out), seed=seed,
                     **settings)  # fmt: skip
    log(f"== {task} {exp.model} at {exp.image_size}px, {exp.epochs} epochs")
    start = time.perf_counter()
    card = run_experiment(exp, command="benchmarks/celeba_real.py", verbose=0)
    card["seconds"] = round(time.perf_counter() - start, 1)
    log(f"   test accuracy {card['metrics']['test']['accuracy']:.4f} in {card['seconds']} s")
    return card


def gender(root: Path, out: Path, seed: int) -> dict:
    frame = split_by_identity(sources.label_celeba("gender", root), seed)
    result = {
        "images": len(frame),
        "male_share": round(float((frame["label"] == "male").mean()), 4),
    }
    for model, settings in GENDER_RUNS.items():
        card = train("gender", frame, out, seed, "real", model=model, **settings)
        result[model] = {"test_accuracy": round(card["metrics"]["test"]["accuracy"], 4),
                         "val_accuracy": round(card["metrics"]["val"]["accuracy"], 4),
                         "seconds": card["seconds"], "parameters": card["parameters"],
                         "inference": card["inference"]}  # fmt: skip
    return result


def attributes(root: Path, out: Path, seed: int) -> dict:
    from facelab.data.pipeline import encode_labels

    frame = sources.label_celeba("attributes", root)
    frame = split_by_identity(frame, seed, stratify=frame["label"].str.contains("Male"))
    card = train("attributes", frame, out, seed, "real", **ATTRIBUTE_RUN)
    task = get_task("attributes")
    test = card["metrics"]["test"]
    targets = {s: encode_labels(frame.loc[frame["split"] == s, "label"], task) for s in ("train", "test")}  # fmt: skip
    train_majority = targets["train"].mean(axis=0) >= 0.5
    baseline_train = float((targets["test"] == train_majority).mean())
    return {
        "images": len(frame),
        "test_images": int(test["n"]),
        "mean_accuracy": round(test["mean_accuracy"], 4),
        "baseline_train_majority": round(baseline_train, 4),
        "baseline_test_majority": round(test["mean_majority_baseline"], 4),
        "points_above_baseline": round(100 * (test["mean_accuracy"] - max(baseline_train, test["mean_majority_baseline"])), 2),
        "mean_balanced_accuracy": round(test["mean_balanced_accuracy"], 4),
        "mean_f1": round(test["mean_f1"], 4),
        "seconds": card["seconds"],
    }  # fmt: skip


def orientation(root: Path, out: Path, seed: int) -> dict:
    from facelab.data.celeba import LANDMARK_FILE, read_landmarks

    landmarked = len(read_landmarks(root / LANDMARK_FILE))
    frame = sources.label_celeba("orientation", root)
    counts = frame["label"].value_counts().reindex(["left", "center", "right"], fill_value=0)
    frame = split_by_identity(frame, seed)
    card = train("orientation", frame, out, seed, "real", **ORIENTATION_RUN)
    return {
        "landmarked_images": landmarked,
        "labelled": len(frame),
        "kept_fraction": round(len(frame) / landmarked, 4),
        "class_counts": {k: int(v) for k, v in counts.items()},
        "test_images": int(card["metrics"]["test"]["n"]),
        "fromscratch_test_agreement": round(card["metrics"]["test"]["accuracy"], 4),
        "seconds": card["seconds"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--celeba", default=str(CELEBA))
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", help="keep the runs' outputs in this folder (default: discard)")
    args = parser.parse_args()
    root = Path(args.celeba)
    if not (root / "img_align_celeba").is_dir():
        print(json.dumps({"benchmark": "celeba_real", "skipped": f"{root} not found"}))
        return 0
    np.random.seed(args.seed)
    start = time.perf_counter()
    result: dict = {"benchmark": "celeba_real", "seed": args.seed}
    with contextlib.ExitStack() as stack:
        out = Path(args.keep or stack.enter_context(tempfile.TemporaryDirectory()))
        out.mkdir(parents=True, exist_ok=True)
        for part in args.only:
            result[part] = {"gender": gender, "attributes": attributes,
                            "orientation": orientation}[part](root, out, args.seed)  # fmt: skip
    result["wall_time_s"] = round(time.perf_counter() - start, 1)
    result["machine"] = machine_info()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
