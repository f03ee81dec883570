"""Gender on the embedded data: CelebA pretraining, then Adience fine-tuning (CPU, weights=None).

    python benchmarks/gender_synthetic.py [--images 3000] [--adience-images 1500]
                                          [--image-size 64] [--epochs 15] [--fine-tune-epochs 10]

Renders a synthetic CelebA and a synthetic Adience (the same face renderer, photographed
differently), then:
  (a) MobileNetV2 with the reference gender head (512/512/512, dropout 0.5/0.5/0, L2 1e-3),
      weights=None, trained on synthetic CelebA gender (identity-disjoint 70/15/15);
      target >= 0.95 test accuracy;
  (b) the same model scored on the synthetic Adience test fold as it is, then fine-tuned on
      the other Adience folds (``from_run``, the whole network, low learning rate); target: the
      fine-tuned model above the CelebA-only one on the Adience test fold (the reference
      pattern: 0.61-0.79 -> 0.9147);
  (c) the Hassner & Levi CNN trained on synthetic Adience alone, for comparison.
Prints one JSON line with the stage table and wall times.
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

from facelab.config import Experiment  # noqa: E402
from facelab.data import sources  # noqa: E402
from facelab.data.manifest import write_manifest  # noqa: E402
from facelab.data.split import split_folds, split_frame  # noqa: E402
from facelab.data.synthetic import render_celeba  # noqa: E402
from facelab.data.synthetic_adience import render_adience  # noqa: E402
from facelab.machine import machine_info  # noqa: E402
from facelab.train import run_experiment  # noqa: E402

HEAD = {"head": "gender"}  # 512/512/512, dropout 0.5/0.5/0, L2 1e-3


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000, help="synthetic CelebA faces")
    parser.add_argument("--adience-images", type=int, default=1500)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=15, help="CelebA pretraining epochs")
    parser.add_argument("--fine-tune-epochs", type=int, default=10)
    parser.add_argument("--fine-tune-lr", type=float, default=1e-4)
    parser.add_argument("--test-fold", type=int, default=0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data", help="render into / reuse this folder (default: a temporary one)")
    parser.add_argument("--keep", help="keep the runs' outputs in this folder")
    args = parser.parse_args()
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        data = Path(args.data) if args.data else scratch
        out = Path(args.keep) if args.keep else scratch
        out.mkdir(parents=True, exist_ok=True)
        log("rendering the synthetic CelebA and Adience")
        if not (data / "celeba" / "truth.csv").exists():
            render_celeba(data / "celeba", n=args.images, seed=0, progress=False)
        if not (data / "adience" / "fold_frontal_4_data.txt").exists():
            render_adience(data / "adience", n=args.adience_images, seed=0, progress=False)
        celeba = sources.label_celeba("gender", data / "celeba")
        celeba["split"] = split_frame(celeba, seed=args.seed)
        adience = sources.label_adience(data / "adience")
        adience["split"] = split_folds(adience, args.test_fold)
        celeba_csv = write_manifest(celeba, out / "gender_celeba.csv")
        adience_csv = write_manifest(adience, out / "gender_adience.csv")

        common = dict(task="gender", output_dir=str(out), image_size=args.image_size,
                      batch_size=32, optimizer="adam", seed=args.seed, augment=True,
                      rotation=10.0, shift=0.08, zoom=0.1, brightness=0.2, flip=True)  # fmt: skip
        pretrain = Experiment(**common, model="mobilenetv2", run="celeba",
                              manifest=str(celeba_csv), epochs=args.epochs, lr=1e-3,
                              reduce_lr=3, extra=HEAD)  # fmt: skip
        log(f"== MobileNetV2 on synthetic CelebA, {args.epochs} epochs")
        first = run_experiment(pretrain, command="benchmarks/gender_synthetic.py", verbose=0)
        fine = pretrain.replace(run="adience", manifest=str(adience_csv), from_run="celeba",
                                epochs=args.fine_tune_epochs, lr=args.fine_tune_lr)  # fmt: skip
        log(f"== fine-tuning on synthetic Adience, {args.fine_tune_epochs} epochs")
        second = run_experiment(fine, command="benchmarks/gender_synthetic.py", verbose=0)
        hassner = Experiment(**common, model="hassnercnn", run="adience",
                             manifest=str(adience_csv), epochs=args.epochs + args.fine_tune_epochs,
                             lr=1e-3, reduce_lr=3)  # fmt: skip
        log("== Hassner CNN on synthetic Adience alone")
        third = run_experiment(hassner, command="benchmarks/gender_synthetic.py", verbose=0)
    stages = second["stages"]
    celeba_name, adience_name = "gender_celeba", "gender_adience"
    result = {
        "benchmark": "gender_synthetic",
        "images": {"celeba": len(celeba), "adience": len(adience),
                   "adience_dropped": adience.attrs.get("dropped", {})},  # fmt: skip
        "mobilenetv2_celeba_test_accuracy": round(first["metrics"]["test"]["accuracy"], 4),
        "celeba_only_on_adience_test": round(stages[0][adience_name], 4),
        "fine_tuned_on_adience_test": round(stages[1][adience_name], 4),
        "fine_tuned_on_celeba_test": round(stages[1].get(celeba_name, float("nan")), 4),
        "hassnercnn_adience_test_accuracy": round(third["metrics"]["test"]["accuracy"], 4),
        "seconds": {"pretrain": first["wall_time_s"], "fine_tune": second["wall_time_s"],
                    "hassnercnn": third["wall_time_s"]},  # fmt: skip
        "inference_mobilenetv2": first["inference"],
        "image_size": args.image_size, "epochs": args.epochs,
        "fine_tune_epochs": args.fine_tune_epochs, "fine_tune_lr": args.fine_tune_lr,
        "wall_time_s": round(time.perf_counter() - start, 1),
        "machine": machine_info(),
    }  # fmt: skip
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
