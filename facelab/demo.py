"""`make demo`: the whole flow on the embedded synthetic CelebA, printing where everything went."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from facelab.config import Experiment
from facelab.data import sources
from facelab.data.manifest import write_manifest
from facelab.data.skipped import SkipLog
from facelab.data.split import split_frame, split_report

DEMO_IMAGES = 3000
DEMO_EPOCHS = 20
DEMO_TASKS = ("orientation", "light")


def prepare_data(root: Path, n: int, seed: int = 0) -> Path:
    """Render the synthetic CelebA under ``root/data`` unless an earlier demo already did."""
    from facelab.data.synthetic import render_celeba

    data = root / "data" / "celeba-synth"
    truth = data / "truth.csv"
    if truth.is_file() and len(pd.read_csv(truth)) == n:
        print(f"[1/4] synthetic CelebA already in {data} ({n} images)")
    else:
        print(f"[1/4] rendering {n} synthetic CelebA faces into {data}")
        render_celeba(data, n=n, seed=seed)
    return data


def label_and_split(task: str, celeba: Path, root: Path) -> Path:
    """Label one task from the synthetic CelebA, plot samples, split; returns the split manifest."""
    from facelab.plots import plot_labelled_manifest

    log = SkipLog()
    frame = sources.label_celeba(task, celeba, skip_log=log)
    frame["split"] = split_frame(frame, seed=42)
    manifest = write_manifest(frame, root / "data" / f"{task}_split.csv")
    plot = root / "plots" / f"{task}_labelled_samples.png"
    plot_labelled_manifest(frame, task, plot)
    print(f"      {task}: {len(frame)} labelled -> {manifest}, samples {plot}")
    print("      " + split_report(frame).to_string().replace("\n", "\n      "))
    return manifest


def demo_experiment(task: str, manifest: Path, root: Path, epochs: int = DEMO_EPOCHS) -> Experiment:
    """The demo's FromScratch run for ``task``: 64 px, Adam, label-swapping flip augmentation."""
    return Experiment(
        task=task, model="fromscratch", run="demo", manifest=str(manifest), output_dir=str(root),
        image_size=64, batch_size=32, epochs=epochs, optimizer="adam", lr=2e-3,
        conv_dropout=0.2, dense_dropout=0.5, reduce_lr=3,
        augment=True, rotation=5.0, shift=0.05, zoom=0.05, brightness=0.2,  # flip swaps labels
    )  # fmt: skip


def run_demo(
    out: str | Path = ".", n: int | None = None, epochs: int | None = None
) -> pd.DataFrame:
    """Synth -> label -> split -> train FromScratch per task -> evaluate -> predict -> plots."""
    from facelab.train import run_experiment

    root = Path(out)
    start = time.perf_counter()
    celeba = prepare_data(root, n or DEMO_IMAGES)
    print("[2/4] labelling (orientation from landmarks, light from pixels) and splitting")
    manifests = {task: label_and_split(task, celeba, root) for task in DEMO_TASKS}
    cards = []
    for i, task in enumerate(DEMO_TASKS, start=1):
        print(f"[3/4] training FromScratch for {task} ({i}/{len(DEMO_TASKS)})")
        exp = demo_experiment(task, manifests[task], root, epochs or DEMO_EPOCHS)
        cards.append(run_experiment(exp, command="python -m facelab demo"))
    table = pd.DataFrame(
        {
            "run": c["stem"],
            "test_accuracy": round(c["metrics"]["test"]["accuracy"], 4),
            "test_loss": round(c["metrics"]["test"]["loss"], 4),
            "epochs": c["epochs_run"],
            "wall_s": c["wall_time_s"],
        }
        for c in cards
    )
    print(
        f"[4/4] done in {time.perf_counter() - start:.0f} s. Results (also in models/results.csv):"
    )
    print(table.to_string(index=False))
    print("Figures in plots/, predictions in predictions/, models and run cards in models/.")
    return table
