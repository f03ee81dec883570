"""Any supported source -> labelled frame ``path, label, group, score`` (what `label` writes).

Some sources add a column the official splits need: CelebA's ``partition``, Adience's ``fold``.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from facelab.data import adience, celeba, labels
from facelab.data.celeba_names import LANDMARK_COLUMNS
from facelab.data.folders import read_folders
from facelab.data.images import list_images
from facelab.data.skipped import SkipLog
from facelab.data.yaleb import read_yaleb
from facelab.tasks import get_task

COLUMNS = ["path", "label", "group", "score"]


def label_celeba(
    task: str, root: str | os.PathLike, margin: float | None = None, skip_log: SkipLog | None = None
) -> pd.DataFrame:
    """Label a CelebA folder for ``task``: gender and attributes from `list_attr_celeba.txt`,
    orientation from the landmarks, light from the pixels; plus ``partition`` when the folder
    has `list_eval_partition.txt` (0 train, 1 val, 2 test)."""
    get_task(task)
    skip_log = skip_log if skip_log is not None else SkipLog()
    frame = celeba.load_celeba(root, skip_log, landmarks=task == "orientation")
    group = frame["identity"].astype(str) if "identity" in frame else pd.Series("", frame.index)
    if task == "gender":
        label = np.where(frame["Male"] == 1, "male", "female")
        out = pd.DataFrame({"path": frame["path"], "label": label, "group": group, "score": np.nan})
    elif task == "attributes":
        attrs = frame[list(get_task("attributes").classes)] == 1
        label = ["|".join(attrs.columns[row]) for row in attrs.to_numpy()]
        out = pd.DataFrame({"path": frame["path"], "label": label, "group": group, "score": np.nan})
    elif task == "orientation":
        if LANDMARK_COLUMNS[0] not in frame:
            raise FileNotFoundError(
                f"{root}: orientation labels need {celeba.LANDMARK_FILE}; it is missing"
            )
        marks = frame[list(LANDMARK_COLUMNS)].dropna()
        labelled = labels.label_orientation(marks, **_margin(margin))
        out = pd.DataFrame(
            {
                "path": frame.loc[labelled.index, "path"],
                "label": labelled["label"],
                "group": group.loc[labelled.index],
                "score": labelled["score"],
            }
        )
    elif task == "light":
        # The fixed aligned-face box beats landmark boxes on aligned CelebA (see labels.py).
        labelled = labels.label_light(list(frame["path"]), skip_log=skip_log, **_margin(margin))
        out = labelled.assign(group=group.reindex(_ids(labelled["path"])).to_numpy())
    else:
        raise ValueError(f"task {task!r} cannot be labelled from CelebA files")
    if "partition" not in frame:
        return out[COLUMNS].reset_index(drop=True)
    partition = frame["partition"].set_axis(frame["path"]).astype("Int64")
    out = out.assign(partition=partition.reindex(out["path"]).set_axis(out.index))
    return out[[*COLUMNS, "partition"]].reset_index(drop=True)


def label_adience(root: str | os.PathLike, skip_log: SkipLog | None = None) -> pd.DataFrame:
    """Gender labels from the Adience fold files, with the ``fold`` column (user as group).

    ``frame.attrs["dropped"]`` counts the rows dropped for an unknown (``u``) or empty gender.
    """
    frame = adience.read_adience(root, skip_log)
    out = frame.assign(score=np.nan)[[*COLUMNS, "fold"]].reset_index(drop=True)
    out.attrs["dropped"] = dict(frame.attrs["dropped"])
    return out


def label_images(
    root: str | os.PathLike, margin: float | None = None, skip_log: SkipLog | None = None
) -> pd.DataFrame:
    """Light labels for any folder of face images (searched recursively)."""
    paths = list_images(root)
    if not paths:
        raise ValueError(f"{root}: no images found (looked for .jpg, .png, .pgm, ... recursively)")
    labelled = labels.label_light(paths, skip_log=skip_log, **_margin(margin))
    return labelled.assign(group="")[COLUMNS].reset_index(drop=True)


def label_yaleb(root: str | os.PathLike, skip_log: SkipLog | None = None) -> pd.DataFrame:
    """Ground-truth light labels from Extended Yale B file names (subject as group, azimuth as score)."""
    frame = read_yaleb(root, skip_log)
    return frame.assign(score=frame["azimuth"])[COLUMNS].reset_index(drop=True)


def label_folders(
    task: str, root: str | os.PathLike, skip_log: SkipLog | None = None
) -> pd.DataFrame:
    """Labels from a folder-per-class tree (the hand-labelled layout)."""
    frame = read_folders(root, get_task(task), skip_log)
    return frame.assign(score=np.nan)[COLUMNS]


def _margin(margin: float | None) -> dict:
    return {} if margin is None else {"margin": margin}


def _ids(paths: pd.Series) -> list[str]:
    return [os.path.basename(p) for p in paths]
