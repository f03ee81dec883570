"""Command-line arguments of `train` and `predict`, and the Experiment they describe."""

from __future__ import annotations

import argparse
import dataclasses
import json

from facelab.config import CLASS_WEIGHTS, OPTIMIZERS, Experiment
from facelab.tasks import TASKS

# Experiment fields exposed as --flags (the name with '-' for '_'), beyond the ones below.
_TUNABLE = (
    "final_lr", "gamma", "beta_1", "beta_2", "epsilon", "weight_decay", "momentum",
    "conv_dropout", "dense_dropout", "head_dropout", "dense_units", "fine_tune_layers",
    "fine_tune_epochs", "fine_tune_lr", "rotation", "shift", "zoom", "brightness",
    "early_stopping", "reduce_lr", "cache", "seed",
)  # fmt: skip


def add_train_args(parser: argparse.ArgumentParser) -> None:
    """The flags of `python -m facelab train` (every Experiment knob)."""
    defaults = Experiment()
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--model", default=defaults.model, help="fromscratch, mobilenetv2, ...")
    parser.add_argument("--manifest", default="", help="manifest CSV with a split column")
    parser.add_argument("--pairs", default="", help="verification: LFW pairs folder")
    parser.add_argument("--run", default="", help="run name, part of every output's name")
    parser.add_argument("--output-dir", default=".", help="where models/, plots/, predictions/ go")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--weights", default="none", help="none, imagenet or a local weights file")
    parser.add_argument(
        "--augment", action=argparse.BooleanOptionalAction, default=defaults.augment
    )
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=defaults.flip)
    parser.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument(
        "--mixed-precision", action=argparse.BooleanOptionalAction, default=False,
        help="16-bit compute with float32 outputs: mixed_float16 on GPU, mixed_bfloat16 on CPU",
    )  # fmt: skip
    parser.add_argument(
        "--devices", type=int, default=1,
        help="train on N GPUs (MirroredStrategy); --batch-size is per device",
    )  # fmt: skip
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic ops: the same seed gives the same weights (slower)",
    )
    parser.add_argument(
        "--from-run", default="", metavar="NAME",
        help="start from an earlier run's best model (its run name, same task and model, or a "
        ".keras path) instead of a new one; its base is unfrozen for fine-tuning",
    )  # fmt: skip
    parser.add_argument(
        "--attributes", nargs="+", default=[], metavar="NAME",
        help="attributes task: learn only these attributes (default: all 40)",
    )  # fmt: skip
    parser.add_argument(
        "--class-weight", choices=CLASS_WEIGHTS, default=defaults.class_weight,
        help="balanced: weigh rare classes (for attributes: rare values) up",
    )  # fmt: skip
    parser.add_argument(
        "--extra", action="append", default=[], metavar="KEY=VALUE", type=_extra_item,
        help="a model option, VALUE in JSON: head=gender, units=[512,512,512], l2=0.001, "
        "dropouts=[0.5,0.5,0], filters=[16,32,64], pooling=avg, freeze_base=false (repeatable)",
    )  # fmt: skip
    for name in _TUNABLE:
        default = getattr(defaults, name)
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=type(default),
            default=default,
            help=f"(default {default})",
        )


def _extra_item(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: give KEY=VALUE, e.g. head=gender")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare word such as gender or avg


def experiment_from_args(args: argparse.Namespace) -> Experiment:
    """The Experiment described by parsed `train` arguments."""
    names = {f.name for f in dataclasses.fields(Experiment)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values["extra"] = dict(values.get("extra") or [])
    return Experiment(**values)


def add_predict_args(parser: argparse.ArgumentParser) -> None:
    """The flags of `python -m facelab predict`."""
    parser.add_argument("model", help="a saved model (.keras or .h5)")
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files, folders or manifest CSVs"
    )
    parser.add_argument("--out", required=True, help="prediction CSV to write")
    parser.add_argument(
        "--task",
        choices=sorted(TASKS),
        help="task of the model (default: from the run card beside the model)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--tta",
        action="store_true",
        help="average with the mirrored image (left/right swapped where they apply)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the rows of a cut-off run (<out>.partial) and predict the rest",
    )
