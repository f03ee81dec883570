"""Streaming prediction of images, folders or manifests -> `path,predicted,confidence,p_<class>` CSV."""

from __future__ import annotations

import json
import os
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from facelab.data.images import list_images
from facelab.data.manifest import read_manifest
from facelab.data.skipped import SkipLog
from facelab.io import check_writable
from facelab.tasks import Task, get_task


def iter_predictions(
    model,
    paths: Sequence[str],
    batch_size: int = 64,
    skip_log: SkipLog | None = None,
    progress: bool = True,
    tta: Task | None = None,
) -> Iterator[tuple[list[str], np.ndarray]]:
    """Yield (paths, probabilities) batch by batch for every readable image in ``paths``.

    Images are decoded in a tf.data pipeline in parallel with the model, never all held in
    memory; unreadable files go to ``skip_log``. A progress bar shows images per second.
    With ``tta`` (the model's task), each image is also predicted mirrored and the two averaged,
    the mirrored prediction's left and right swapped where the task says so.
    """
    import tensorflow as tf

    from facelab.data.pipeline import make_predict_dataset

    image_size = int(model.input_shape[1])
    dataset = make_predict_dataset(paths, image_size, batch_size, skip_log=skip_log)
    predict = batch_predictor(model)
    with tqdm(
        total=len(paths), unit="img", disable=not progress, desc="predict", mininterval=1
    ) as bar:
        for images, names, ok in dataset:
            ok = ok.numpy().astype(bool)
            if ok.any():
                batch = images if ok.all() else tf.boolean_mask(images, ok)  # no copy when all read
                probs = np.asarray(predict(batch), np.float64)
                if tta is not None:
                    mirrored = np.asarray(predict(batch[:, :, ::-1]), np.float64)
                    probs = (probs + mirrored[:, tta.flip_permutation()]) / 2
                yield [n.decode() for n in names.numpy()[ok]], probs
            bar.update(len(ok))


_PREDICTORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def batch_predictor(model):
    """``model(images)`` in inference mode as a tf.function of any batch size, traced once per
    model (``predict_on_batch`` traces again for a second batch size, such as a last, short one)."""
    if model not in _PREDICTORS:
        import tensorflow as tf

        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        held = weakref.ref(model)  # the cache must not keep the model alive
        _PREDICTORS[model] = tf.function(
            lambda images: held()(images, training=False), input_signature=[spec]
        )
    return _PREDICTORS[model]


def predict_paths(
    model,
    paths: Sequence[str],
    batch_size: int = 64,
    skip_log: SkipLog | None = None,
    progress: bool = True,
) -> tuple[list[str], np.ndarray]:
    """Predict every readable image in ``paths``; returns (paths kept, probabilities)."""
    kept: list[str] = []
    chunks: list[np.ndarray] = []
    for names, probs in iter_predictions(model, paths, batch_size, skip_log, progress):
        kept += names
        chunks.append(probs)
    classes = int(model.output_shape[-1])
    return kept, (np.concatenate(chunks) if chunks else np.zeros((0, classes)))


def predict_to_csv(
    model,
    paths: Sequence[str],
    task: Task,
    out: str | os.PathLike,
    labels: dict[str, str] | None = None,
    batch_size: int = 64,
    resume: bool = False,
    skip_log: SkipLog | None = None,
    tta: bool = False,
) -> Path:
    """Stream predictions into ``out``: rows are appended to ``<out>.partial`` batch by batch and
    the file is renamed to ``out`` when every image is done. With ``resume``, the rows already in
    the partial file are kept and only the other images are predicted."""
    out = check_writable(out)
    partial = out.with_name(out.name + ".partial")
    done: set[str] = set()
    if resume and partial.is_file() and partial.stat().st_size:
        done = set(_finished_rows(partial)["path"])
        print(f"resuming: {len(done)} images already predicted in {partial}")
    else:
        partial.unlink(missing_ok=True)
    todo = [p for p in paths if p not in done]
    header = not partial.exists()
    with open(partial, "a", encoding="utf-8", newline="") as sink:
        for names, probs in iter_predictions(
            model, todo, batch_size, skip_log, tta=task if tta else None
        ):
            rows = prediction_frame(
                names, probs, task, [labels.get(n, "") for n in names] if labels else None
            )
            rows.to_csv(sink, header=header, index=False, lineterminator="\n")
            sink.flush()
            header = False
    if header:  # nothing was readable: still a valid CSV with its header
        prediction_frame([], np.zeros((0, task.num_classes)), task, [] if labels else None).to_csv(
            partial, index=False
        )
    os.replace(partial, out)
    return out


def _finished_rows(partial: Path) -> pd.DataFrame:
    """The complete rows of a partial CSV (a row cut off by a kill is dropped)."""
    text = partial.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        partial.write_text(text, encoding="utf-8")
    return pd.read_csv(partial, dtype={"path": str})


def prediction_frame(
    paths: Sequence[str], probs: np.ndarray, task: Task, labels: Sequence[str] | None = None
) -> pd.DataFrame:
    """`path[,label],predicted,confidence,p_<class>...` with probabilities in percent."""
    frame = pd.DataFrame({"path": list(paths)})
    if labels is not None:
        frame["label"] = list(labels)
    percent = np.round(100.0 * probs, 2)
    if task.multilabel:
        frame["predicted"] = ["|".join(np.asarray(task.classes)[row >= 0.5]) for row in probs]
        frame["confidence"] = np.round(100.0 * np.abs(probs - 0.5).mean(axis=1) * 2, 2)
    else:
        frame["predicted"] = np.asarray(task.classes)[probs.argmax(axis=1)]
        frame["confidence"] = percent.max(axis=1)
    for i, name in enumerate(task.classes):
        frame[f"p_{name}"] = percent[:, i]
    return frame


def measure_inference(
    model, batch_sizes: Sequence[int] = (1, 32), repeats: int = 5, seconds: float = 2.0
) -> dict[str, dict[str, float]]:
    """Model-only inference speed (images already decoded) at each batch size: images per
    second and ms per image, the median of ``repeats`` timed calls after one warm-up call."""
    shape = tuple(int(d) for d in model.input_shape[1:])
    rng = np.random.default_rng(0)
    predict = batch_predictor(model)
    speeds = {}
    for batch in dict.fromkeys(int(b) for b in batch_sizes):
        images = rng.uniform(0, 255, (batch, *shape)).astype(np.float32)
        np.asarray(predict(images))  # warm-up: traces the function once
        times: list[float] = []
        budget = time.perf_counter() + seconds
        while len(times) < repeats and (not times or time.perf_counter() < budget):
            start = time.perf_counter()
            np.asarray(predict(images))
            times.append(time.perf_counter() - start)
        per_batch = float(np.median(times))
        speeds[f"batch_{batch}"] = {
            "images_per_s": round(batch / per_batch, 1),
            "ms_per_image": round(1000.0 * per_batch / batch, 3),
        }
    return speeds


def collect_inputs(inputs: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Image paths from files, folders (recursive) and manifest CSVs; labels where a manifest has them."""
    paths: list[str] = []
    labels: dict[str, str] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths += list_images(path)
        elif path.suffix.lower() == ".csv":
            frame = read_manifest(path)
            paths += list(frame["path"])
            labels.update(zip(frame["path"], frame["label"], strict=True))
        elif path.exists():
            paths.append(str(path))
        else:
            raise FileNotFoundError(f"{path}: no such file or folder; pass images, folders or CSVs")
    if not paths:
        raise ValueError(f"no images found in {list(inputs)}")
    return list(dict.fromkeys(paths)), labels


def load_model_file(path: str | os.PathLike):
    """Load a `.keras` or `.h5` model; a clear error when the file is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    if path.suffix not in (".keras", ".h5"):
        raise ValueError(f"{path}: not a model file; pass a .keras or .h5 file saved by facelab")
    import keras  # after the checks: a mistyped path is answered before TensorFlow loads

    import facelab.models  # noqa: F401  registers the custom layers and optimizers

    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # Keras raises many types for a bad file
        raise ValueError(
            f"{path}: cannot be loaded as a Keras model ({type(err).__name__}: {str(err)[:200]}); "
            "pass a .keras or .h5 file saved by facelab"
        ) from None


def task_of_model(model_path: str | os.PathLike, task: str | None) -> Task:
    """The model's task: given, or read from the run card `<stem>.json` beside the model."""
    if task:
        return get_task(task)
    card = Path(model_path).with_suffix(".json")
    if card.is_file():
        values = json.loads(card.read_text())
        task = get_task(values["task"])
        return get_task(task.name, values.get("classes")) if task.multilabel else task
    raise ValueError(f"{model_path}: no run card {card.name} beside it; pass --task")


def predict_command(args) -> int:
    """`python -m facelab predict MODEL INPUT... --out CSV`."""
    task = task_of_model(args.model, args.task)
    model = load_model_file(args.model)
    if int(model.output_shape[-1]) != task.num_classes:
        raise ValueError(
            f"{args.model}: the model has {model.output_shape[-1]} outputs but task {task.name} "
            f"has {task.num_classes} classes; pass the matching --task"
        )
    paths, labels = collect_inputs(args.inputs)
    log = SkipLog()
    start = time.perf_counter()
    out = predict_to_csv(
        model, paths, task, args.out, labels, args.batch_size, args.resume, log, args.tta
    )
    seconds = time.perf_counter() - start
    skipped = log.write_next_to(out)
    count = sum(1 for _ in open(out, encoding="utf-8")) - 1
    print(f"predicted {len(paths)} images in {seconds:.1f} s ({len(paths) / seconds:.0f} images/s)")
    print(
        f"wrote {count} predictions to {out}"
        + (f"; skipped {len(log)}: {skipped}" if skipped else "")
    )
    return 0
