"""Mixed precision and XLA on the synthetic orientation task: same accuracy, and the time each takes.

    python benchmarks/speed_switches.py [--n 3000] [--epochs 20]

Trains the demo's FromScratch orientation run three times on the same split: plain float32,
mixed precision (``mixed_float16`` on GPU; ``mixed_bfloat16`` here on CPU, where float16 is
emulated) and XLA (jit_compile). Target: each within 1 accuracy point of plain. Prints one
JSON line with each run's test accuracy and training time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facelab.demo import demo_experiment, label_and_split, prepare_data  # noqa: E402
from facelab.devices import mixed_policy  # noqa: E402
from facelab.machine import machine_info  # noqa: E402
from facelab.train import run_experiment  # noqa: E402

SETTINGS = {
    "float32": {},
    "mixed_precision": {"mixed_precision": True},
    "xla": {"jit_compile": True},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = label_and_split("orientation", prepare_data(root, args.n), root)
        runs = {}
        for name, switches in SETTINGS.items():
            exp = demo_experiment("orientation", manifest, root, args.epochs).replace(
                run=name, **switches
            )
            card = run_experiment(exp, command="benchmarks/speed_switches.py", verbose=0)
            runs[name] = {"test_accuracy": round(card["metrics"]["test"]["accuracy"], 4),
                          "train_time_s": card["train_time_s"]}  # fmt: skip
    plain = runs["float32"]["test_accuracy"]
    result = {
        "benchmark": "speed_switches", "task": "orientation", "images": args.n, "epochs": args.epochs,
        "runs": runs, "mixed_policy": mixed_policy(),
        "max_accuracy_gap_points": round(100 * max(abs(r["test_accuracy"] - plain) for r in runs.values()), 2),
        "machine": machine_info(),
    }  # fmt: skip
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
