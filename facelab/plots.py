"""Figures of a run: learning curves, confusion matrix, sample grids, attribute and model bars.

Each function draws on its own ``matplotlib.figure.Figure`` (Agg canvas, no pyplot state, so it
works headless and leaves the caller's figures alone), writes the PNG atomically and returns the
Figure, which a notebook cell displays when it is the cell's last expression.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from facelab.data.images import shrink_image
from facelab.io import atomic_path

DPI = 100
RIGHT_COLOUR = "tab:green"  # a sample's title when the prediction is right
WRONG_COLOUR = "tab:red"  # ... and when it is wrong
TRAIN_COLOUR = "tab:blue"
VAL_COLOUR = "tab:orange"

# One look for every figure, whatever style the caller's session has set.
_STYLE = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "figure.titlesize": 11,
    "legend.fontsize": 8,
    "axes.grid": False,
}
_MAX_SAMPLES = 9  # plot_samples: a 3x3 grid
_MAX_SHOWN_SIDE = 512  # a panel is a few hundred pixels: larger images are shrunk before drawing
_SAMPLES_PER_CLASS = 6  # plot_labelled_samples: columns
# Keras names the accuracy column after the metric; the first one present is plotted.
_ACCURACY_COLUMNS = ("accuracy", "binary_accuracy", "categorical_accuracy", "acc")


def plot_history(
    history: pd.DataFrame,
    path: str | os.PathLike,
    title: str,
    phase_starts: Sequence[int] = (),
) -> Figure:
    """Loss and accuracy per epoch, train and validation, from a Keras CSVLogger frame.

    Epochs are shown 1-based. ``phase_starts`` are the 0-based epochs at which a new phase begins
    (Keras ``initial_epoch``); a dashed line marks each, between its epoch and the one before.
    """
    frame = pd.DataFrame(history)
    if "epoch" in frame.columns:
        # A resumed run (BackupAndRestore) may log an epoch twice: the later row is the one kept.
        frame = frame.drop_duplicates("epoch", keep="last").sort_values("epoch")
        epochs = frame["epoch"].to_numpy(dtype=float) + 1
    else:
        epochs = np.arange(1, len(frame) + 1, dtype=float)
    starts = sorted({int(s) for s in phase_starts if int(s) > 0})

    with _style():
        fig = _figure(10, 4)
        for ax, name, candidates in zip(
            fig.subplots(1, 2), ("loss", "accuracy"), (("loss",), _ACCURACY_COLUMNS), strict=True
        ):
            column = next(
                (c for c in candidates if c in frame.columns or f"val_{c}" in frame.columns), None
            )
            drawn = False
            for prefix, label, colour in (
                ("", "train", TRAIN_COLOUR),
                ("val_", "validation", VAL_COLOUR),
            ):
                if column is not None and prefix + column in frame.columns:
                    values = pd.to_numeric(frame[prefix + column], errors="coerce").to_numpy()
                    ax.plot(epochs, values, marker=".", color=colour, label=label)
                    drawn = True
            if drawn:
                ax.legend(loc="best")
            else:
                _note(ax, f"no {name} recorded")
            for number, start in enumerate(starts, start=2):
                ax.axvline(start + 0.5, linestyle="--", color="0.35", linewidth=1)
                ax.text(
                    start + 0.5,
                    0.98,
                    f" phase {number}",
                    transform=ax.get_xaxis_transform(),
                    ha="left",
                    va="top",
                    color="0.35",
                )
            ax.set_title(name)
            ax.set_xlabel("epoch")
            ax.set_ylabel(name)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.suptitle(title)
        _save(fig, path)
    return fig


def plot_confusion(
    matrix: np.ndarray | Sequence[Sequence[float]],
    classes: Sequence[str],
    path: str | os.PathLike,
    title: str,
    normalize: bool = False,
) -> Figure:
    """Confusion matrix (rows true, columns predicted), coloured by the fraction of each true class.

    Cells show counts, or with ``normalize`` the row percentage.
    """
    counts = np.asarray(matrix, dtype=float)
    n = len(classes)
    if counts.shape != (n, n):
        raise ValueError(
            f"matrix must be square with one row per class, {n}x{n} for {list(classes)}, "
            f"got shape {counts.shape}"
        )
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    integer = np.all(counts == np.round(counts))

    with _style():
        side = max(4.0, 0.7 * n + 2.0)
        fig = _figure(side + 1.0, side)
        ax = fig.subplots()
        image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
        fig.colorbar(image, ax=ax, label="fraction of the true class", shrink=0.8)
        for i in range(n):
            for j in range(n):
                if normalize:
                    text = f"{100 * fractions[i, j]:.0f}%"
                else:
                    text = f"{int(counts[i, j])}" if integer else f"{counts[i, j]:.2f}"
                colour = "white" if fractions[i, j] > 0.5 else "black"
                ax.text(j, i, text, ha="center", va="center", color=colour)
        long_names = max((len(str(c)) for c in classes), default=0) > 6
        ax.set_xticks(range(n), [str(c) for c in classes], rotation=45 if long_names else 0)
        ax.set_yticks(range(n), [str(c) for c in classes])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        fig.suptitle(title)
        _save(fig, path)
    return fig


def plot_samples(
    images: np.ndarray | Sequence[np.ndarray],
    true: Sequence[str] | None,
    predicted: Sequence[str],
    confidence: Sequence[float],
    path: str | os.PathLike,
    title: str,
) -> Figure:
    """A 3x3 grid of the first images with "true: x / pred: y (97%)", green if right, red if wrong.

    Images are uint8 or float 0..255 (float 0..1 is scaled); confidence is 0..1 or a percentage.
    With ``true=None`` only the prediction is shown, uncoloured.
    """
    images = list(images)
    if not images:
        raise ValueError("no images to plot: pass at least one image")
    lengths = {"images": len(images), "predicted": len(predicted), "confidence": len(confidence)}
    if true is not None:
        lengths["true"] = len(true)
    if len(set(lengths.values())) > 1:
        raise ValueError(f"images, labels and confidences must have the same length, got {lengths}")
    shown = min(len(images), _MAX_SAMPLES)
    percent = np.asarray(confidence, dtype=float)
    if np.nanmax(percent) <= 1.0:
        percent = 100.0 * percent
    cols = min(3, shown)
    rows = math.ceil(shown / cols)

    with _style():
        fig = _figure(3.0 * cols, 3.2 * rows + 0.4)
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for k, ax in enumerate(axes):
            ax.set_axis_off()
            if k >= shown:
                continue
            _show_image(ax, images[k])
            label = f"pred: {predicted[k]} ({percent[k]:.0f}%)"
            colour = "black"
            if true is not None:
                label = f"true: {true[k]} / {label}"
                colour = RIGHT_COLOUR if str(true[k]) == str(predicted[k]) else WRONG_COLOUR
            ax.set_title(label, color=colour)
        fig.suptitle(title)
        _save(fig, path)
    return fig


def plot_labelled_samples(
    images_by_class: Mapping[str, Sequence[np.ndarray]],
    scores_by_class: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    title: str,
) -> Figure:
    """One row per class with up to six of its images, each with its label score underneath."""
    if not images_by_class:
        raise ValueError("no classes to plot: images_by_class is empty")
    classes = list(images_by_class)
    cols = max(1, min(_SAMPLES_PER_CLASS, max(len(v) for v in images_by_class.values())))

    with _style():
        fig = _figure(1.8 * cols + 0.8, 2.0 * len(classes) + 0.4)
        axes = fig.subplots(len(classes), cols, squeeze=False)
        for r, name in enumerate(classes):
            images = list(images_by_class[name])
            scores = list(scores_by_class.get(name, ()))
            for c, ax in enumerate(axes[r]):
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if c < len(images):
                    _show_image(ax, images[c])
                    if c < len(scores) and scores[c] is not None and np.isfinite(scores[c]):
                        ax.set_xlabel(f"{float(scores[c]):.2f}")
            axes[r, 0].set_ylabel(f"{name}\n({len(images)})", fontsize=10)
            if not images:
                _note(axes[r, 0], "no samples")
        fig.suptitle(title)
        _save(fig, path)
    return fig


def plot_labelled_manifest(
    frame: pd.DataFrame, task: str, path: str | os.PathLike, per_class: int = 6, seed: int = 0
) -> Figure:
    """Sample grid of a labelled frame (``path, label, score``): a row per class, scores shown."""
    from facelab.data.images import read_image
    from facelab.tasks import get_task

    images: dict[str, list[np.ndarray]] = {}
    scores: dict[str, list[float]] = {}
    for label in get_task(task).classes:
        rows = frame[frame["label"] == label]
        rows = rows.sample(min(per_class, len(rows)), random_state=seed)
        images[label] = [read_image(p) for p in rows["path"]]
        scores[label] = [float(v) for v in rows["score"]] if "score" in rows else []
    return plot_labelled_samples(images, scores, path, f"{task}: labelled samples (score below)")


def plot_attribute_bars(
    per_attribute: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike,
    title: str,
    metric: str = "accuracy",
    baseline: str | None = "majority_baseline",
) -> Figure:
    """Horizontal bar of ``metric`` per attribute with the ``baseline`` value marked on each bar.

    ``per_attribute`` is ``multilabel_metrics(...)["per_attribute"]``.
    """
    if not per_attribute:
        raise ValueError("no attributes to plot: per_attribute is empty")
    names = list(per_attribute)
    first = per_attribute[names[0]]
    if not isinstance(first, Mapping):
        raise ValueError(
            "per_attribute must map attribute -> metrics dict; pass "
            "multilabel_metrics(...)['per_attribute'], not the whole result"
        )
    for key in (metric, baseline):
        if key is not None and key not in first:
            raise ValueError(f"metric {key!r} not in per_attribute; it has {sorted(first)}")
    values = np.array([per_attribute[n][metric] for n in names], dtype=float)
    y = np.arange(len(names))

    with _style():
        fig = _figure(7.5, 0.24 * len(names) + 1.4)
        ax = fig.subplots()
        label = metric.replace("_", " ")
        if baseline is None:
            ax.barh(y, values, color=TRAIN_COLOUR, label=label)
        else:
            marks = np.array([per_attribute[n][baseline] for n in names], dtype=float)
            below = values < marks
            ax.barh(y[~below], values[~below], color=TRAIN_COLOUR, label=label)
            if below.any():
                ax.barh(
                    y[below], values[below], color=WRONG_COLOUR, label=f"{label} below baseline"
                )
            ax.scatter(
                marks,
                y,
                marker="|",
                s=160,
                linewidths=2,
                color="black",
                zorder=3,
                label=baseline.replace("_", " "),
            )
        ends = values if baseline is None else np.fmax(values, marks)  # text clear of the mark
        for k, value in enumerate(values):
            ax.text(ends[k], k, f" {value:.3f}", va="center", ha="left", fontsize=7)
        ax.set_yticks(y, names)
        ax.set_ylim(len(names) - 0.5, -0.5)  # first attribute on top
        _unit_axis(ax, values)
        ax.set_xlabel(metric.replace("_", " "))
        fig.legend(loc="outside lower center", ncols=3)
        fig.suptitle(title)
        _save(fig, path)
    return fig


def plot_model_comparison(
    results: pd.DataFrame,
    path: str | os.PathLike,
    title: str,
    metric: str = "test_accuracy",
) -> Figure:
    """One bar per run stem of ``models/results.csv``, best first; a stem's latest row counts."""
    for column in ("stem", metric):
        if column not in results.columns:
            raise ValueError(
                f"results has no column {column!r}; it has {list(results.columns)} "
                "(read models/results.csv with pandas.read_csv)"
            )
    frame = results.drop_duplicates("stem", keep="last").copy()
    frame[metric] = pd.to_numeric(frame[metric], errors="coerce")
    frame = frame.dropna(subset=[metric])
    if frame.empty:
        raise ValueError(f"no run in results has a {metric} value; train and evaluate one first")
    frame = frame.sort_values(metric, ascending="loss" in metric)
    values = frame[metric].to_numpy(dtype=float)
    y = np.arange(len(frame))

    with _style():
        fig = _figure(7.5, 0.35 * len(frame) + 1.4)
        ax = fig.subplots()
        ax.barh(y, values, color=TRAIN_COLOUR)
        for k, value in enumerate(values):
            ax.text(value, k, f" {value:.3f}", va="center", ha="left")
        ax.set_yticks(y, frame["stem"].astype(str).tolist())
        ax.set_ylim(len(frame) - 0.5, -0.5)  # best on top
        _unit_axis(ax, values)
        ax.set_xlabel(metric.replace("_", " "))
        fig.suptitle(title)
        _save(fig, path)
    return fig


@contextlib.contextmanager
def _style() -> Iterator[None]:
    """The shared look, applied while a figure is drawn and saved."""
    with matplotlib.rc_context(_STYLE):
        yield


def _figure(width: float, height: float) -> Figure:
    """A new figure on its own Agg canvas (not registered with pyplot)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> None:
    """Write ``fig`` as PNG to ``path`` atomically (temp file beside it, then rename)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def _note(ax: Axes, text: str) -> None:
    """Grey text in the middle of an empty panel."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.5")


def _unit_axis(ax: Axes, values: np.ndarray) -> None:
    """Fractions get a 0..1 axis with room for the value labels; other metrics start at 0."""
    top = float(np.nanmax(values)) if len(values) else 1.0
    if np.nanmin(values) >= 0 and top <= 1:
        ax.set_xlim(0, 1.12)
    else:
        ax.set_xlim(min(0.0, float(np.nanmin(values))), top * 1.15 if top > 0 else 1.0)


def _show_image(ax: Axes, image: np.ndarray) -> None:
    """Draw an RGB or grey image given as uint8 or float 0..255 (float 0..1 is scaled)."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            f"an image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {array.shape}"
        )
    if array.dtype != np.uint8:
        array = array.astype(np.float64)
        if array.size and np.nanmax(array) <= 1.0:
            array = array * 255.0
        array = np.clip(np.rint(np.nan_to_num(array)), 0, 255).astype(np.uint8)
    array = shrink_image(array, _MAX_SHOWN_SIDE)  # matplotlib takes seconds over a 10,000 px photo
    if array.ndim == 2:
        ax.imshow(array, cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(array)
