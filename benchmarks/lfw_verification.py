"""Face verification on the LFW development pairs: trained on the training people only, on CPU.

    python benchmarks/lfw_verification.py [--pairs DIR] [--model embedding|siamese]
        [--epochs 14] [--train-pairs 3000] [--batch-size 64] [--time-budget 1200] [--seed 42]

Reads pairsDevTrain.txt (2,200 pairs) and pairsDevTest.txt (1,000 pairs, people disjoint from
training). 15% of the training people are held out, person-disjoint, for validation: the best
epoch (validation AUC) and the decision threshold (validation accuracy) come from them, never
from the test pairs. Prints one JSON line with test accuracy at that threshold, test ROC AUC,
the threshold, training and wall time, and the machine. Target: accuracy >= 0.75 (the reference
Koch-style siamese network scored 0.712) in <= 20 minutes of training on this CPU.
Time it under the shared lock: `flock /tmp/facelab_cpu.lock .venv/bin/python benchmarks/...`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a plain script from any folder

from facelab.machine import machine_info  # noqa: E402
from facelab.verification import run_verification, verification_experiment  # noqa: E402

DEFAULT_PAIRS = REPO.parent / "shared" / "data" / "lfw-pairs"
REFERENCE_ACCURACY = 0.712  # Koch-style siamese network of the reference experiments (D)
TARGET_ACCURACY = 0.75
TARGET_TRAIN_S = 20 * 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default=str(DEFAULT_PAIRS))
    parser.add_argument("--model", choices=["embedding", "siamese"], default="embedding")
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--train-pairs", type=int, default=3000, help="training pairs per epoch")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per batch")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument(
        "--time-budget", type=float, default=TARGET_TRAIN_S,
        help="stop before an epoch that would end past this many seconds (0: off)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", help="keep the run's outputs in this folder (default: discard)")
    args = parser.parse_args()
    if not Path(args.pairs, "pairsDevTest.txt").is_file():
        print(json.dumps({"benchmark": "lfw_verification", "skipped": f"{args.pairs} not found"}))
        return 0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        exp = verification_experiment(
            args.model, pairs=args.pairs, run="bench", output_dir=args.keep or scratch,
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
            extra={"train_pairs": args.train_pairs, "time_budget_s": args.time_budget},
        )  # fmt: skip
        card = run_verification(exp, command="benchmarks/lfw_verification.py", verbose=0)
    test, val = card["metrics"]["test"], card["metrics"]["val"]
    result = {
        "benchmark": "lfw_verification",
        "model": args.model,
        "test_pairs": test["n"],
        "test_accuracy": round(test["accuracy"], 4),
        "test_auc": round(test["auc"], 4),
        "threshold": round(card["threshold"], 4),
        "val_accuracy": round(val["accuracy"], 4),
        "val_auc": round(val["auc"], 4),
        "pairs": card["pairs"], "people": card["people"],
        "reference_accuracy": REFERENCE_ACCURACY,
        "target_met": bool(test["accuracy"] >= TARGET_ACCURACY and card["train_time_s"] <= TARGET_TRAIN_S),
        "epochs_run": card["epochs_run"], "best_epoch": card["best_epoch"],
        "parameters": card["parameters"],
        "train_time_s": card["train_time_s"],
        "wall_time_s": round(time.perf_counter() - start, 1),
        "epochs": args.epochs, "train_pairs_per_epoch": args.train_pairs,
        "batch_size": args.batch_size, "seed": args.seed,
        "machine": machine_info(),
    }  # fmt: skip
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
