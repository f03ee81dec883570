"""Stratified, group-disjoint, deterministic train/val/test split (scikit-learn's splitters)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from facelab.data.manifest import DUPLICATE_COLUMN, SPLITS

DEFAULT_RATIOS = (0.7, 0.15, 0.15)
_FOLDS = 20  # the ratios are met in steps of 1/20 (0.7/0.15/0.15 -> 14/3/3 folds)
# StratifiedGroupKFold weighs every group against every fold (about 1 ms a group here); above
# this many groups, folds are drawn per group, stratified by the group's most common label,
# which keeps class shares within a fraction of a point once there are this many groups.
_EXACT_GROUP_LIMIT = 3000


def split_frame(
    frame: pd.DataFrame,
    ratios: tuple[float, ...] = DEFAULT_RATIOS,
    seed: int = 42,
    group_column: str = "group",
) -> pd.Series:
    """Assign each row to train/val/test: stratified by label, no group in two splits.

    ``ratios`` has 2 (train, test) or 3 (train, val, test) shares summing to 1. Rows with an
    empty group count as their own group. Same input and seed give the same split.
    """
    shares = _check_ratios(ratios)
    if len(frame) == 0:
        raise ValueError("cannot split an empty frame")
    names = SPLITS if len(shares) == 3 else ("train", "test")
    labels = frame["label"].astype(str).to_numpy()
    groups = _groups(frame, group_column)
    n_groups = len(np.unique(groups))
    n_folds = min(_FOLDS, n_groups)
    if n_folds < len(shares):
        raise ValueError(
            f"only {n_groups} group(s): need at least {len(shares)} to fill {', '.join(names)}"
        )
    labels = _strata(labels, n_folds)
    fold = np.empty(len(frame), dtype=np.int64)
    with warnings.catch_warnings():
        # sklearn warns when a class has fewer members than folds; the split is still valid.
        warnings.simplefilter("ignore", UserWarning)
        if n_groups <= _EXACT_GROUP_LIMIT:
            splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
            for k, (_, test_index) in enumerate(splitter.split(labels, labels, groups)):
                fold[test_index] = k
        else:
            fold = _group_folds(labels, groups, n_folds, seed)
    counts = _folds_per_split(shares, n_folds)
    bounds = np.cumsum(counts)
    split = np.array(names)[np.searchsorted(bounds, fold, side="right")]
    return pd.Series(split, index=frame.index, name="split")


def split_official(frame: pd.DataFrame, column: str = "partition") -> pd.Series:
    """CelebA's official split from its ``partition`` column: 0 train, 1 val, 2 test."""
    if column not in frame:
        raise ValueError(
            f"the manifest has no {column!r} column; re-run `python -m facelab label --celeba DIR` "
            "on a CelebA folder that holds list_eval_partition.txt, or use --split group"
        )
    names = {0: "train", 1: "val", 2: "test"}
    partition = pd.to_numeric(frame[column], errors="coerce")
    bad = ~partition.isin(list(names))
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(
            f"row {first + 2} ({frame['path'].iloc[first]}): {column} {frame[column].iloc[first]!r} "
            f"is not 0, 1 or 2 ({int(bad.sum())} such rows); re-label from list_eval_partition.txt"
        )
    return pd.Series(partition.astype(int).map(names).to_numpy(), index=frame.index, name="split")


def split_folds(
    frame: pd.DataFrame, test_fold: int, n_folds: int | None = None, column: str = "fold"
) -> pd.Series:
    """Cross-validation split from a ``fold`` column: fold K test, fold (K+1) % n val, rest train.

    ``n_folds`` defaults to the largest fold number + 1 (5 for Adience).
    """
    if column not in frame:
        raise ValueError(
            f"the manifest has no {column!r} column; label a source with folds "
            "(`python -m facelab label --task gender --adience DIR`), or use --split group"
        )
    fold = pd.to_numeric(frame[column], errors="coerce")
    whole = fold.notna() & (fold >= 0) & (fold == fold.round())
    if not whole.all():
        first = int(np.flatnonzero(~whole.to_numpy())[0])
        raise ValueError(
            f"row {first + 2}: {column} {frame[column].iloc[first]!r} is not a fold number (0, 1, ...)"
        )
    fold = fold.astype(int)
    n_folds = int(fold.max()) + 1 if n_folds is None else int(n_folds)
    if n_folds < 3:
        raise ValueError(f"need at least 3 folds for train, val and test; found {n_folds}")
    if int(fold.max()) >= n_folds:
        raise ValueError(f"fold {int(fold.max())} found, but n_folds is {n_folds}")
    if not 0 <= test_fold < n_folds:
        raise ValueError(
            f"--test-fold {test_fold} is out of range: the manifest has folds 0-{n_folds - 1}"
        )
    split = np.where(fold == test_fold, "test", "train")
    split[(fold == (test_fold + 1) % n_folds).to_numpy()] = "val"
    return pd.Series(split, index=frame.index, name="split")


def _strata(labels: np.ndarray, n_folds: int) -> np.ndarray:
    """The labels to stratify by. When no label has ``n_folds`` samples (a multi-label manifest:
    nearly every attribute combination is unique) they are pooled and the split is unstratified."""
    _, counts = np.unique(labels, return_counts=True)
    if counts.max() >= n_folds:
        return labels
    return np.full(len(labels), "", dtype=object)


def _group_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold per row: StratifiedKFold over the groups, each stratified by its most common label."""
    counts = pd.DataFrame({"group": groups, "label": labels}).value_counts().reset_index()
    counts = counts.sort_values(["group", "count", "label"], ascending=[True, False, True])
    dominant = counts.drop_duplicates("group").set_index("group")["label"]
    strata = dominant.to_numpy()
    if np.unique(strata, return_counts=True)[1].min() < n_folds:
        strata = np.zeros(len(strata))  # a class too rare to stratify: plain shuffled folds
    group_fold = np.empty(len(dominant), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, test_index) in enumerate(splitter.split(strata, strata)):
        group_fold[test_index] = k
    return group_fold[dominant.index.get_indexer(groups)]


def _check_ratios(ratios: tuple[float, ...]) -> np.ndarray:
    shares = np.asarray(ratios, dtype=float)
    if len(shares) not in (2, 3) or (shares <= 0).any() or abs(shares.sum() - 1) > 1e-6:
        raise ValueError(
            f"ratios {list(ratios)} must be 2 or 3 positive shares summing to 1, e.g. 0.7 0.15 0.15"
        )
    return shares


def _groups(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Group ids; rows without one get a unique id of their own. Rows in one set of
    near-duplicates (the ``duplicate_set`` column) join one group, with their groups' other rows."""
    duplicates = frame.get(DUPLICATE_COLUMN, pd.Series("", index=frame.index))
    duplicates = duplicates.fillna("").astype(str).to_numpy()
    has_duplicates = bool((duplicates != "").any())
    if column not in frame and not has_duplicates:
        return np.arange(len(frame)).astype(str)
    groups = np.full(len(frame), "", object)
    if column in frame:
        groups = frame[column].fillna("").astype(str).to_numpy().copy()
    if has_duplicates:
        pairs = [_links(values) for values in (groups, duplicates)]
        groups = connected_sets(len(frame), np.concatenate(pairs), "\0set")
    empty = groups == ""
    groups[empty] = [f"\0row{i}" for i in np.flatnonzero(empty)]
    return groups


def _links(values: np.ndarray) -> np.ndarray:
    """(K, 2) pairs joining each row with a non-empty value to the first row with that value."""
    named = np.flatnonzero(values != "")
    codes, _ = pd.factorize(values[named])
    first = pd.Series(named).groupby(codes).transform("min").to_numpy()
    return np.stack([first, named], axis=1).astype(np.int64)


def connected_sets(n_rows: int, pairs: np.ndarray, prefix: str) -> np.ndarray:
    """Per row, ``<prefix><k>`` naming its connected set under ``pairs``, or "" for a row in none."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n_rows, n_rows))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component, minlength=n_rows)
    # Numbered in order of each set's first row, so the names do not depend on scipy's numbering.
    order = {c: k for k, c in enumerate(dict.fromkeys(component[sizes[component] > 1]))}
    return np.array([f"{prefix}{order[c]}" if sizes[c] > 1 else "" for c in component], object)


def _folds_per_split(shares: np.ndarray, n_folds: int) -> np.ndarray:
    """Whole folds per split, each split at least one, summing to ``n_folds``."""
    counts = np.maximum(1, np.floor(shares * n_folds + 0.5).astype(int))
    while counts.sum() > n_folds:
        counts[np.argmax(counts)] -= 1
    while counts.sum() < n_folds:
        counts[np.argmax(shares * n_folds - counts)] += 1
    return counts


def split_report(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows per split and class (with shares), for printing after a split."""
    table = pd.crosstab(frame["split"], frame["label"], margins=True, margins_name="all")
    return table.reindex([s for s in (*SPLITS, "all") if s in table.index])


def missing_classes(frame: pd.DataFrame, classes: tuple[str, ...]) -> dict[str, list[str]]:
    """For each split, the classes that have no sample in it (empty dict when all are present)."""
    gaps = {}
    for split, part in frame.groupby("split"):
        absent = [c for c in classes if c not in set(part["label"])]
        if absent:
            gaps[str(split)] = absent
    return gaps
