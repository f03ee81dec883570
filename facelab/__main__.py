"""`python -m facelab <verb>`: synth, label, split, train, predict, demo, bench."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from facelab.tasks import TASKS

# Input mistakes a user can fix: printed as one clear line, never as a traceback.
_USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError)


def _split_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="labelled CSV (path,label[,group,score])")
    parser.add_argument("--out", help="output CSV (default: <manifest>_split.csv beside it)")
    parser.add_argument(
        "--ratios",
        type=float,
        nargs="+",
        default=[0.7, 0.15, 0.15],
        help="train [val] test shares, summing to 1 (default 0.7 0.15 0.15)",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--split",
        choices=["group", "shuffle", "official", "folds"],
        default="group",
        help="group: no group in two splits (default); shuffle: stratified shuffle, groups ignored "
        "(near-duplicate sets still kept together); "
        "official: CelebA's partition column (0 train, 1 val, 2 test); folds: a fold column, "
        "with --test-fold K as test and fold K+1 as val (--ratios and --seed are not used)",
    )
    parser.add_argument(
        "--test-fold",
        type=int,
        metavar="K",
        help="with --split folds: the test fold (0-4 for Adience)",
    )
    parser.add_argument(
        "--materialize",
        metavar="DIR",
        help="also lay out DIR/{train,val,test}/<class>/ for flow_from_directory",
    )
    parser.add_argument("--mode", choices=["symlink", "copy"], default="symlink")
    parser.add_argument("--force", action="store_true", help="allow --out to be the input manifest")
    parser.add_argument(
        "--find-duplicates",
        action="store_true",
        help="hash every image and keep near-duplicates (copies, re-saves, resized versions) in one "
        "split; they are named in a duplicate_set column, which later splits also follow",
    )
    parser.add_argument(
        "--duplicate-distance",
        type=int,
        default=4,
        metavar="BITS",
        help="with --find-duplicates: most bits two 64-bit perceptual hashes may differ by (default 4)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of DESIGN.md."""
    parser = argparse.ArgumentParser(prog="python -m facelab", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("synth", help="render the embedded miniature CelebA (or Adience)")
    p.add_argument("--out", required=True, help="folder to write (new, or an earlier synth output)")
    p.add_argument(
        "--adience", action="store_true", help="a miniature Adience (fold files) instead of CelebA"
    )
    p.add_argument("--n", type=int, help="number of images (default 3000; 1500 with --adience)")
    p.add_argument("--seed", type=int, default=0)

    p = verbs.add_parser("label", help="label a dataset and write a manifest CSV")
    p.add_argument("--task", required=True, choices=sorted(TASKS))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--celeba", metavar="DIR", help="a CelebA root (img_align_celeba/ + .txt files)"
    )
    source.add_argument("--images", metavar="DIR", help="any folder of faces (light only)")
    source.add_argument(
        "--yaleb", metavar="DIR", help="Extended Yale B: ground truth from file names"
    )
    source.add_argument("--folders", metavar="DIR", help="a folder-per-class tree")
    source.add_argument(
        "--adience",
        metavar="DIR",
        help="an Adience root (faces/ + fold_frontal_K_data.txt; gender)",
    )
    p.add_argument("--out", required=True, help="manifest CSV to write")
    p.add_argument("--margin", type=float, help="drop samples this close to a threshold")
    p.add_argument("--plot", help="sample grid PNG (default plots/<task>_labelled_samples.png)")

    _split_args(verbs.add_parser("split", help="add a train/val/test split to a manifest"))

    p = verbs.add_parser(
        "compose-groups", help="compose group photos with known mask counts from split faces"
    )
    p.add_argument("--faces", required=True, help="split manifest of faces (task mask)")
    p.add_argument("--out", required=True, help="folder for the photos and manifest.csv")
    p.add_argument(
        "--n",
        nargs="+",
        default=["train=1500", "val=200", "test=300"],
        metavar="SPLIT=N",
        help="photos per split (default train=1500 val=200 test=300)",
    )
    p.add_argument("--size", type=int, default=256, help="photo side in pixels (default 256)")
    p.add_argument("--faces-per-photo", type=int, nargs=2, default=[2, 5], metavar=("MIN", "MAX"))
    p.add_argument(
        "--train-faces-per-photo",
        type=int,
        nargs=2,
        metavar=("MIN", "MAX"),
        help="faces per training photo (default: --faces-per-photo); 1 5 adds one-face photos, "
        "which teach each face's mask directly",
    )
    p.add_argument("--max-rotation", type=float, default=10.0, help="degrees (default 10)")
    p.add_argument("--seed", type=int, default=0)

    from facelab.run_args import add_predict_args, add_train_args  # no TensorFlow import

    add_train_args(verbs.add_parser("train", help="train, evaluate, predict and plot one run"))
    add_predict_args(verbs.add_parser("predict", help="predict images, folders or manifests"))

    p = verbs.add_parser("verify", help="face verification: score pairs of images, same or not")
    p.add_argument("model", help="a verification model (.keras or .h5) saved by facelab")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="two face images to compare")
    p.add_argument("--pairs", help="tab-separated 'path_a path_b [same]' lines, instead of images")
    p.add_argument("--out", help="with --pairs: CSV to write (path_a,path_b,score,same_predicted)")
    p.add_argument(
        "--threshold",
        type=float,
        help="decision threshold (default: the run card's, from validation)",
    )
    p.add_argument("--batch-size", type=int, default=32)

    p = verbs.add_parser("demo", help="what `make demo` runs: synth, label, split, train, predict")
    p.add_argument("--out", default=".", help="project folder for data/, models/, plots/ ...")
    p.add_argument("--n", type=int, default=None, help="synthetic images (default: the demo's)")
    p.add_argument("--epochs", type=int, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one verb; input mistakes print ``facelab: error: ...`` and return 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return _VERBS[args.verb](args, argv) or 0
    except _USER_ERRORS as err:
        print(f"facelab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facelab: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


def _synth(args, argv) -> int:
    if args.adience:
        from facelab.data.synthetic_adience import render_adience

        n = 1500 if args.n is None else args.n
        out = render_adience(args.out, n=n, seed=args.seed)
        print(f"wrote {n} synthetic Adience faces and 5 fold files to {out}")
        return 0
    from facelab.data.synthetic import render_celeba

    n = 3000 if args.n is None else args.n
    out = render_celeba(args.out, n=n, seed=args.seed)
    print(f"wrote {n} synthetic faces to {out}")
    return 0


def _label(args, argv) -> int:
    from facelab.data import sources
    from facelab.data.manifest import write_manifest
    from facelab.data.skipped import SkipLog
    from facelab.io import check_writable

    check_writable(args.out)
    log = SkipLog()
    if args.celeba:
        frame = sources.label_celeba(args.task, args.celeba, args.margin, log)
    elif args.images:
        if args.task != "light":
            raise ValueError("--images labels light direction only; use --task light")
        frame = sources.label_images(args.images, args.margin, log)
    elif args.yaleb:
        if args.task != "light":
            raise ValueError("--yaleb gives light-direction labels; use --task light")
        frame = sources.label_yaleb(args.yaleb, log)
    elif args.adience:
        if args.task != "gender":
            raise ValueError("--adience gives gender labels; use --task gender")
        frame = sources.label_adience(args.adience, log)
    else:
        frame = sources.label_folders(args.task, args.folders, log)
    if frame.empty:
        raise ValueError("no sample could be labelled; check the source folder and --margin")
    out = write_manifest(frame, args.out)
    skipped = log.write_next_to(out)
    print(f"wrote {len(frame)} labelled samples to {out}")
    if not TASKS[args.task].multilabel:
        print(
            frame["label"]
            .value_counts()
            .reindex(TASKS[args.task].classes, fill_value=0)
            .to_string()
        )
    if "dropped" in frame.attrs:
        dropped = frame.attrs["dropped"]
        detail = ", ".join(f"{k}: {v}" for k, v in dropped.items())
        print(f"dropped {sum(dropped.values())} rows without a known gender ({detail})")
    if "fold" in frame:
        per_fold = frame["fold"].value_counts().sort_index()
        print("per fold: " + ", ".join(f"{k}: {v}" for k, v in per_fold.items()))
    if skipped:
        print(f"skipped {len(log)} inputs: see {skipped}")
    if not TASKS[args.task].multilabel:
        from facelab.plots import plot_labelled_manifest

        plot = args.plot or os.path.join("plots", f"{args.task}_labelled_samples.png")
        plot_labelled_manifest(frame, args.task, plot)
        print(f"sample grid: {plot}")
    return 0


def _split(args, argv) -> int:
    from facelab.data.duplicates import duplicate_report, find_duplicates
    from facelab.data.manifest import DUPLICATE_COLUMN, read_manifest, write_manifest
    from facelab.data.materialize import materialize
    from facelab.data.skipped import SkipLog
    from facelab.data.split import split_folds, split_frame, split_official, split_report

    source = Path(args.manifest)
    out = Path(args.out) if args.out else source.with_name(f"{source.stem}_split.csv")
    if out.resolve() == source.resolve() and not args.force:
        raise FileExistsError(
            f"{out}: --out is the input manifest; pick another file or add --force to replace it"
        )
    if args.split == "folds" and args.test_fold is None:
        raise ValueError("--split folds needs --test-fold K (the fold to test on, e.g. 0)")
    if args.split != "folds" and args.test_fold is not None:
        raise ValueError(f"--test-fold applies to --split folds only, not --split {args.split}")
    frame = read_manifest(source)
    if args.find_duplicates:
        skipped = SkipLog()
        found = find_duplicates(frame["path"], args.duplicate_distance, skipped)
        frame[DUPLICATE_COLUMN] = found.to_numpy()
        skipped.write_next_to(out)
    if args.split in ("group", "shuffle"):
        by = frame.drop(columns="group") if args.split == "shuffle" else frame
        frame["split"] = split_frame(by, tuple(args.ratios), seed=args.seed)
        how = f"seed {args.seed}"
    else:
        try:
            if args.split == "official":
                frame["split"] = split_official(frame)
                how = "CelebA official partition"
            else:
                frame["split"] = split_folds(frame, args.test_fold)
                how = f"test fold {args.test_fold}"
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
    write_manifest(frame, out)
    print(f"wrote {out} ({len(frame)} rows, {how})")
    print(split_report(frame).to_string())
    if DUPLICATE_COLUMN in frame:
        print(duplicate_report(frame))
    if args.materialize:
        folder = materialize(frame, args.materialize, args.mode)
        print(f"laid out {len(frame)} files ({args.mode}) under {folder}")
    return 0


def _compose_groups(args, argv) -> int:
    from facelab.data.groups import compose_groups
    from facelab.data.manifest import read_manifest
    from facelab.data.skipped import SkipLog
    from facelab.tasks import get_task

    counts = {}
    for item in args.n:
        split, _, number = item.partition("=")
        if not number.isdigit():
            raise ValueError(f"--n {item!r}: give photos per split as SPLIT=N, e.g. train=1500")
        counts[split] = int(number)
    faces = read_manifest(args.faces, get_task("mask"), require_split=True)
    log = SkipLog()
    frame = compose_groups(faces, args.out, counts, seed=args.seed, size=args.size,
                           faces_per_photo=tuple(args.faces_per_photo),
                           train_faces_per_photo=args.train_faces_per_photo,
                           max_rotation=args.max_rotation, skip_log=log)  # fmt: skip
    print(f"wrote {len(frame)} photos and {Path(args.out, 'manifest.csv')} (seed {args.seed})")
    print(frame.groupby(["split", "label"]).size().unstack(fill_value=0).to_string())
    if len(log):
        print(f"skipped {len(log)} unreadable faces: see {Path(args.out, 'manifest_skipped.csv')}")
    return 0


def _train(args, argv) -> int:
    from facelab.data.manifest import manifest_file
    from facelab.run_args import experiment_from_args

    exp = experiment_from_args(args)
    if exp.manifest and exp.task != "verification":
        manifest_file(exp.manifest)  # a mistyped manifest is reported before TensorFlow loads
    from facelab.train import run_experiment

    command = "python -m facelab " + " ".join(shlex.quote(a) for a in argv)
    if exp.task == "verification":
        from facelab.config import Experiment
        from facelab.verification import run_verification, verification_experiment

        # Start from the settings tuned for verification; keep only the flags the user changed.
        defaults = Experiment().to_dict()
        given = {k: v for k, v in exp.to_dict().items() if v != defaults[k]}
        given.pop("task")
        exp = verification_experiment(
            given.pop("model", "embedding"), given.pop("pairs", ""), **given
        )
        run_verification(exp, command=command)
    else:
        run_experiment(exp, command=command)
    return 0


def _predict(args, argv) -> int:
    from facelab.predict import predict_command

    return predict_command(args)


def _verify(args, argv) -> int:
    from facelab.verification import verify_command

    return verify_command(args)


def _demo(args, argv) -> int:
    from facelab.demo import run_demo

    run_demo(args.out, n=args.n, epochs=args.epochs)
    return 0


def _bench(args, argv) -> int:
    import subprocess

    scripts = sorted(Path(__file__).resolve().parent.parent.joinpath("benchmarks").glob("*.py"))
    for script in scripts:
        print(f"== {script.name}", flush=True)
        subprocess.run([sys.executable, str(script)], check=False)
    return 0


_VERBS = {
    "synth": _synth,
    "label": _label,
    "split": _split,
    "compose-groups": _compose_groups,
    "train": _train,
    "predict": _predict,
    "verify": _verify,
    "demo": _demo,
    "bench": _bench,
}

if __name__ == "__main__":
    sys.exit(main())
