"""Face pairs for verification: person-disjoint splits, balanced extra pairs, and a tf.data pipeline.

Each distinct image is decoded and resized once (``ImageBank``, through the same OpenCV reader as
every other pipeline); a pair dataset then gathers both images of each pair from memory, augments
them independently (one fused affine warp each, ``facelab.data.pipeline.augment_batch``) and yields
``((a, b), same)`` batches, or ``((a, b), ids)`` with the two people's integer ids for losses that
use identities (the embedding network).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.model_selection import GroupShuffleSplit

from facelab.config import Experiment
from facelab.data.lfw import PAIR_COLUMNS, pair_images, pair_people
from facelab.data.pipeline import AUTOTUNE, augment_batch, make_predict_dataset
from facelab.data.skipped import SkipLog

TARGETS = ("same", "ids")
SAMPLED = "sampled"  # the ``source`` of a pair drawn by sample_pairs


def hold_out_people(images: pd.DataFrame, fraction: float, seed: int) -> set[str]:
    """A seeded ``fraction`` of the people of ``images`` (``path, person``), for validation."""
    if not 0 < fraction < 1:
        raise ValueError(
            f"the validation fraction must lie strictly between 0 and 1, got {fraction}"
        )
    people = images["person"].nunique()
    if people < 4:
        raise ValueError(
            f"only {people} people in the training pairs; person-disjoint validation needs at least 4"
        )
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    _, val_rows = next(splitter.split(images, groups=images["person"]))
    return set(images["person"].iloc[val_rows])


def pairs_within(pairs: pd.DataFrame, people: Iterable[str]) -> pd.DataFrame:
    """The pairs whose two people both belong to ``people``."""
    people = set(people)
    keep = pairs["person_a"].isin(people) & pairs["person_b"].isin(people)
    return pairs[keep].reset_index(drop=True)


def sample_pairs(
    images: pd.DataFrame, n: int, seed: int, matched: int | None = None
) -> pd.DataFrame:
    """``n`` pairs drawn from ``images`` (``path, person``): ``matched`` of them (default half)
    matched, the rest mismatched.

    Matched pairs go through every distinct same-person combination (in a seeded order) before any
    repeats; mismatched pairs join two different people at random. Same seed, same pairs.
    """
    n_matched = n // 2 if matched is None else matched
    if n < 0 or not 0 <= n_matched <= n:
        raise ValueError(f"cannot draw {n_matched} matched pairs among {n} (both must be >= 0)")
    rng = np.random.default_rng(seed)
    by_person = {
        person: sorted(group["path"]) for person, group in images.groupby("person", sort=True)
    }
    names = sorted(by_person)
    combos = [
        (person, paths[i], paths[j])
        for person, paths in by_person.items()
        for i in range(len(paths))
        for j in range(i + 1, len(paths))
    ]
    if (n_matched and not combos) or (n > n_matched and len(names) < 2):
        raise ValueError(
            f"cannot draw pairs from {len(images)} images of {len(names)} people: matched "
            "pairs need a person with 2 images and mismatched pairs need 2 people"
        )
    rows = []
    while len(rows) < n_matched:
        for k in rng.permutation(len(combos))[: n_matched - len(rows)]:
            person, a, b = combos[k]
            if rng.random() < 0.5:
                a, b = b, a
            rows.append((person, person, 1, a, b))
    for _ in range(n - n_matched):
        i, j = rng.choice(len(names), size=2, replace=False)
        pa, pb = names[i], names[j]
        rows.append((pa, pb, 0, rng.choice(by_person[pa]), rng.choice(by_person[pb])))
    frame = pd.DataFrame(rows, columns=["person_a", "person_b", "same", "path_a", "path_b"])
    frame["image_a"] = frame["image_b"] = frame["line"] = 0
    frame["source"] = SAMPLED
    return frame[[*PAIR_COLUMNS, "source"]]


def verification_splits(
    train_pairs: pd.DataFrame,
    test_pairs: pd.DataFrame,
    val_fraction: float = 0.15,
    train_size: int = 0,
    val_size: int = 0,
    seed: int = 42,
) -> dict[str, pd.DataFrame]:
    """Person-disjoint ``train``/``val``/``test`` pairs frames with a ``split`` and ``source`` column.

    Validation people are a seeded ``val_fraction`` of the training-pairs people; official pairs
    joining a training and a validation person are dropped. Pairs drawn from each side's own people
    top train and val up to ``train_size`` / ``val_size`` pairs, half of them matched where the
    official pairs leave room. People of the test pairs are never used for training or validation.
    """
    test_people = pair_people(test_pairs)
    overlap = pair_people(train_pairs) & test_people
    if overlap:
        print(
            f"note: {len(overlap)} people of the training pairs are also in the test pairs; "
            "their training pairs are left out so that no person is in two splits"
        )
        train_pairs = train_pairs[
            ~train_pairs["person_a"].isin(overlap) & ~train_pairs["person_b"].isin(overlap)
        ]
    images = pair_images(train_pairs)
    val_people = hold_out_people(images, val_fraction, seed)
    train_people = set(images["person"]) - val_people
    splits = {}
    for split, people, size, offset in (
        ("train", train_people, train_size, 1),
        ("val", val_people, val_size, 2),
    ):
        official = pairs_within(train_pairs, people).assign(source="official")
        own = images[images["person"].isin(people)]
        extra = max(0, size - len(official))
        matched = min(extra, max(0, size // 2 - int(official["same"].sum())))
        extra = sample_pairs(own, extra, seed + offset, matched=matched)
        splits[split] = pd.concat([official, extra], ignore_index=True)
    splits["test"] = test_pairs.assign(source="official").reset_index(drop=True)
    for split, frame in splits.items():
        frame.insert(0, "split", split)
    return splits


def person_ids(pairs: pd.DataFrame) -> np.ndarray:
    """(N, 2) int32 ids of the two people of each pair (0.. by sorted name; the same person, the same id)."""
    names = sorted(pair_people(pairs))
    index = {name: i for i, name in enumerate(names)}
    return np.array(
        [[index[a], index[b]] for a, b in zip(pairs["person_a"], pairs["person_b"], strict=True)],
        dtype=np.int32,
    ).reshape(-1, 2)


class ImageBank:
    """Every distinct image of some pairs, decoded and resized once: uint8 (N, S, S, 3) in memory.

    Unreadable files are recorded in ``skip_log`` and left out; ``usable(pairs)`` drops their pairs.
    """

    def __init__(
        self,
        paths: Iterable[str],
        image_size: int,
        skip_log: SkipLog | None = None,
        batch_size: int = 64,
    ):
        self.paths = list(dict.fromkeys(os.fspath(p) for p in paths))
        self.image_size = int(image_size)
        self.skip_log = SkipLog() if skip_log is None else skip_log
        images = np.zeros((len(self.paths), image_size, image_size, 3), np.uint8)
        ok = np.zeros(len(self.paths), bool)
        start = 0
        if self.paths:
            for batch, _, flags in make_predict_dataset(
                self.paths, image_size, batch_size, self.skip_log
            ):
                stop = start + len(flags)
                images[start:stop] = np.clip(np.rint(batch.numpy()), 0, 255).astype(np.uint8)
                ok[start:stop] = flags.numpy()
                start = stop
        self.images = images
        self.index = {path: i for i, path in enumerate(self.paths) if ok[i]}

    def usable(self, pairs: pd.DataFrame) -> pd.DataFrame:
        """The pairs whose two images were both read."""
        keep = pairs["path_a"].isin(self.index) & pairs["path_b"].isin(self.index)
        return pairs[keep].reset_index(drop=True)

    def rows(self, paths: Sequence[str]) -> np.ndarray:
        """Row of each path in ``images``; a KeyError names a path the bank does not hold."""
        try:
            return np.array([self.index[os.fspath(p)] for p in paths], dtype=np.int64)
        except KeyError as err:
            raise KeyError(
                f"{err.args[0]}: not in the image bank (unreadable, or not among its paths)"
            ) from None


def make_pair_dataset(
    pairs: pd.DataFrame,
    bank: ImageBank,
    exp: Experiment,
    *,
    training: bool,
    target: str = "same",
    shuffle: bool | None = None,
) -> tf.data.Dataset:
    """Batches of ``((a, b), y)``: two float32 0..255 image batches (B, S, S, 3) and the target.

    ``target`` "same" gives y = 1.0/0.0 (B,), "ids" gives the two people's int32 ids (B, 2).
    Shuffles (seeded, new order each epoch) when ``shuffle`` or by default when ``training``;
    augments a and b independently when ``training and exp.augment``. Pairs with an unreadable
    image must be removed first (``bank.usable``).
    """
    if target not in TARGETS:
        raise ValueError(f"target {target!r} unknown; choose one of {TARGETS}")
    if pairs.empty:
        raise ValueError("no pairs given; the split selected no pair with two readable images")
    rows_a, rows_b = bank.rows(pairs["path_a"]), bank.rows(pairs["path_b"])
    if target == "same":
        y = pairs["same"].to_numpy(np.float32)
    else:
        y = person_ids(pairs)
    shuffle = training if shuffle is None else shuffle
    images = tf.convert_to_tensor(bank.images)

    ds = tf.data.Dataset.from_tensor_slices(((rows_a, rows_b), y))
    if shuffle:
        ds = ds.shuffle(len(pairs), seed=exp.seed, reshuffle_each_iteration=True)
    ds = ds.batch(exp.batch_size)
    ds = ds.map(
        lambda rows, y: ((tf.gather(images, rows[0]), tf.gather(images, rows[1])), y),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    if training and exp.augment:
        seeds = tf.data.Dataset.random(seed=exp.seed, rerandomize_each_iteration=True).batch(4)

        def augment(batch, seed):
            (a, b), y = batch
            a, _ = augment_batch(a, None, exp, "verification", seed[:2])
            b, _ = augment_batch(b, None, exp, "verification", seed[2:])
            return (a, b), y

        ds = tf.data.Dataset.zip((ds, seeds)).map(
            augment, num_parallel_calls=AUTOTUNE, deterministic=True
        )
    else:
        ds = ds.map(lambda ab, y: ((tf.cast(ab[0], tf.float32), tf.cast(ab[1], tf.float32)), y))
    return ds.prefetch(AUTOTUNE)


def split_summary(splits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Pairs, matched pairs, people and images of each split, one column per split."""
    return pd.DataFrame(
        {
            name: {
                "pairs": len(frame),
                "matched": int(frame["same"].sum()),
                "people": len(pair_people(frame)),
                "images": len(pair_images(frame)),
            }
            for name, frame in splits.items()
        }
    )
