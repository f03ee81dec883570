"""Adience: fold files in the exact real format, the miniature Adience, and the official splits."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from facelab.__main__ import main
from facelab.data import adience, celeba, sources
from facelab.data.celeba import AnnotationError
from facelab.data.skipped import SkipLog
from facelab.data.synthetic import render_celeba
from facelab.data.synthetic_adience import FOLD_COLUMNS, render_adience
from tests.conftest import REPO

HEADER = (
    "user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\t"
    "fiducial_yaw_angle\tfiducial_score"
)
# (fold, line) in the real format; images are written for every row but the "missing" one.
ROWS = [
    (0, "30601258@N03\t10399646885_67c7d20df9_o.jpg\t1\t(25, 32)\tf\t0\t414\t1086\t1383\t-115\t30\t17"),
    (0, "30601258@N03\t10424815813_e94629b1ec_o.jpg\t2\t(25, 32)\tm\t301\t105\t640\t641\t0\t0\t94"),
    (0, "30601258@N03\t10437979845_5985be4b26_o.jpg\t1\t(0, 2)\tu\t2395\t876\t771\t771\t175\t-30\t74"),
    (0, "30601258@N03\t10437979845_5985be4b26_o.jpg\t3\t(0, 2)\t\t752\t1255\t484\t485\t180\t0\t47"),
    (0, "30601258@N03\t11111111111_0000000000_o.jpg\t4\t(38, 43)\tf\t10\t10\t500\t500\t0\t5\t40"),
    (0, "30601258@N03\tbroken line with too few fields"),
    (1, "7153718@N04\t11598838386_349a0d4849_o.jpg\t5\t(48, 53)\tm\t1197\t611\t1001\t1001\t-5\t-15\t68"),
    (2, "113445054@N07\t11763777465_11d01c34ce_o.jpg\t6\t(25, 32)\tf\t0\t0\t816\t816\t-90\t0\t10"),
    (2, "113445054@N07\t11763777466_11d01c34ce_o.jpg\t6\t35\tf\t0\t0\t816\t816\t-90\t0\t10"),
    (3, "64504106@N06\t11808036545_86327e5cc6_o.jpg\t7\t(60, 100)\tm\t12\t50\t700\t700\t0\t10\t90"),
    (4, "8288649@N02\t9551367047_8cbab65d3f_o.jpg\t8\t(15, 20)\tu\t40\t40\t600\t600\t0\t0\t50"),
    (4, "8288649@N02\t9551367048_8cbab65d3f_o.jpg\t9\t(15, 20)\tm\t40\t40\t600\t600\t0\t0\t50"),
]  # fmt: skip
MISSING = "landmark_aligned_face.4.11111111111_0000000000_o.jpg"


def write_adience(root: Path) -> Path:
    """A five-fold Adience root in the real layout (fold 1 with Windows line ends)."""
    for fold in range(5):
        lines = [HEADER] + [line for k, line in ROWS if k == fold]
        end = "\r\n" if fold == 1 else "\n"
        (root / f"fold_frontal_{fold}_data.txt").write_bytes((end.join(lines) + end).encode())
    image = np.full((24, 24, 3), 120, np.uint8)
    for _, line in ROWS:
        fields = line.split("\t")
        if len(fields) != 12:
            continue
        name = f"landmark_aligned_face.{fields[2]}.{fields[1]}"
        if name != MISSING:
            (root / "faces" / fields[0]).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "faces" / fields[0] / name), image)
    return root


def test_reader_keeps_known_genders_counts_dropped_and_logs_bad_lines(tmp_path):
    root = write_adience(tmp_path)
    log = SkipLog()
    with pytest.warns(UserWarning):
        frame = adience.read_adience(root, log)
    assert frame["fold"].value_counts().sort_index().to_dict() == {0: 2, 1: 1, 2: 2, 3: 1, 4: 1}
    assert frame.attrs["dropped"] == {"u": 2, "empty": 1}
    first = frame.iloc[0]
    expected = (
        root.resolve() / "faces/30601258@N03/landmark_aligned_face.1.10399646885_67c7d20df9_o.jpg"
    )
    assert first["path"] == str(expected) and Path(first["path"]).is_file()
    assert (first["label"], first["group"], first["age"]) == ("female", "30601258@N03", "(25, 32)")
    assert list(frame[["face_id", "label", "fold"]].itertuples(index=False, name=None)) == [
        (1, "female", 0), (2, "male", 0), (5, "male", 1), (6, "female", 2), (6, "female", 2),
        (7, "male", 3), (9, "male", 4),
    ]  # fmt: skip
    reasons = log.frame()
    missing = reasons[reasons["file"].str.endswith(MISSING)]
    assert len(missing) == 1 and "fold_frontal_0_data.txt, line 6" in missing["reason"].iloc[0]
    malformed = reasons[reasons["file"] == "fold_frontal_0_data.txt, line 7"]
    assert len(malformed) == 1 and "12 tab-separated fields" in malformed["reason"].iloc[0]
    assert len(log) == 2


@pytest.mark.filterwarnings("ignore::facelab.data.skipped.SkippedInputWarning")
def test_missing_fold_file_wrong_header_and_missing_faces_are_clear_errors(tmp_path):
    root = write_adience(tmp_path)
    (root / "fold_frontal_3_data.txt").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"fold_frontal_3_data\.txt not found.*five Adience"
    ):
        adience.read_adience(root)
    (root / "fold_frontal_3_data.txt").write_text("000001.jpg 0\n000002.jpg 1\n")
    with pytest.raises(
        AnnotationError, match=r"fold_frontal_3_data\.txt, line 1: .*Adience header"
    ):
        adience.read_adience(root)
    bare = tmp_path / "bare"
    bare.mkdir()
    for fold in range(5):
        (bare / f"fold_frontal_{fold}_data.txt").write_text(HEADER + "\n")
    with pytest.raises(FileNotFoundError, match="no faces/ folder"):
        adience.read_adience(bare)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        adience.read_adience(tmp_path / "nowhere")


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_synthetic_adience_has_the_real_layout_and_is_deterministic(tmp_path):
    a = render_adience(tmp_path / "a", n=24, seed=3, progress=False)
    b = render_adience(tmp_path / "b", n=24, seed=3, progress=False)
    assert digest(a) == digest(b)
    assert digest(render_adience(tmp_path / "c", n=24, seed=4, progress=False)) != digest(a)
    rows = []
    for fold in range(5):
        text = (a / f"fold_frontal_{fold}_data.txt").read_text()
        assert text.splitlines()[0] == HEADER
        part = pd.read_csv(
            a / f"fold_frontal_{fold}_data.txt", sep="\t", dtype=str, keep_default_na=False
        )
        rows.append(part.assign(fold=fold))
    rows = pd.concat(rows)
    assert list(rows.columns[:12]) == list(FOLD_COLUMNS) and len(rows) == 24
    assert rows.groupby("user_id")["fold"].nunique().max() == 1, "a person spans two folds"
    assert set(rows["fold"]) == set(range(5))
    assert {"u", ""} <= set(rows["gender"]) and set(rows["gender"]) <= {"f", "m", "u", ""}
    images = sorted(str(p.relative_to(a)) for p in (a / "faces").rglob("*.jpg"))
    assert images == sorted(
        f"faces/{r.user_id}/landmark_aligned_face.{r.face_id}.{r.original_image}"
        for r in rows.itertuples()
    )
    assert all(re.fullmatch(r"\d{8}@N\d{2}", u) for u in rows["user_id"])
    image = cv2.imread(str(a / images[0]))
    assert image.shape == (256, 256, 3)
    frame = adience.read_adience(a)
    known = rows["gender"].isin(["f", "m"])
    assert len(frame) == known.sum()
    assert frame.attrs["dropped"] == {
        "u": (rows["gender"] == "u").sum(),
        "empty": (rows["gender"] == "").sum(),
    }


def test_synthetic_adience_refuses_foreign_folders_and_rerenders_its_own(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        render_adience(mine, n=6, progress=False)
    assert (mine / "notes.txt").read_text() == "keep me"
    out = render_adience(tmp_path / "ad", n=10, seed=1, progress=False)
    before = digest(out)
    render_adience(out, n=6, seed=2, progress=False)
    render_adience(out, n=10, seed=1, progress=False)
    assert digest(out) == before, "a re-render left files of the previous one behind"


@pytest.fixture(scope="module")
def tiny_celeba(tmp_path_factory) -> Path:
    # 20 people: CelebA's 80/10/10 partition by identity leaves 2 people each for val and test.
    return render_celeba(
        tmp_path_factory.mktemp("celeba") / "c", n=60, identities=20, progress=False
    )


def test_synthetic_adience_refuses_a_synthetic_celeba_folder(tiny_celeba):
    with pytest.raises(FileExistsError, match="render_adience"):
        render_adience(tiny_celeba, n=6, progress=False)


@pytest.mark.parametrize("task", ["gender", "attributes", "orientation", "light"])
def test_label_celeba_keeps_the_official_partition(tiny_celeba, task):
    frame = sources.label_celeba(task, tiny_celeba, skip_log=SkipLog())
    truth = celeba.read_partition(tiny_celeba / "list_eval_partition.txt")
    names = [Path(p).name for p in frame["path"]]
    assert len(frame) > 0 and frame["partition"].tolist() == truth.loc[names].tolist()


def split_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "split_dataset.py"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_label_adience_then_split_by_folds_end_to_end(chdir_tmp, capsys):
    assert main(["synth", "--adience", "--out", "ad", "--n", "30", "--seed", "1"]) == 0
    label = ["label", "--task", "gender", "--adience", "ad", "--out", "g.csv", "--plot", "p.png"]
    assert main(label) == 0
    printed = capsys.readouterr().out
    labelled = pd.read_csv("g.csv")
    counts = r"dropped (\d+) rows without a known gender \(u: (\d+), empty: (\d+)\)"
    dropped = re.search(counts, printed)
    assert dropped and int(dropped[1]) == int(dropped[2]) + int(dropped[3]) > 0
    assert len(labelled) + int(dropped[1]) == 30 and f"wrote {len(labelled)} labelled" in printed
    assert list(labelled.columns) == ["path", "label", "group", "score", "fold"]

    split = ["--manifest", "g.csv", "--split", "folds", "--test-fold", "2", "--out", "s.csv"]
    result = split_cli(*split, cwd=chdir_tmp)  # through the top-level split_dataset.py shim
    assert result.returncode == 0, result.stderr
    out = pd.read_csv("s.csv")
    expected = np.select([out["fold"] == 2, out["fold"] == 3], ["test", "val"], "train")
    assert (out["split"] == expected).all() and set(out["split"]) == {"train", "val", "test"}
    assert (out.groupby("group")["split"].nunique() == 1).all()
    assert out.drop(columns="split").equals(labelled)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--split", "folds", "--test-fold", "5"], "--test-fold 5 is out of range"),
        (["--split", "folds"], "needs --test-fold"),
        (["--split", "group", "--test-fold", "1"], "applies to --split folds only"),
        (["--split", "official"], "list_eval_partition.txt"),
    ],
)
def test_fold_and_official_split_errors_say_what_to_do(chdir_tmp, capsys, args, message):
    pd.DataFrame(
        {
            "path": [f"{i}.jpg" for i in range(10)],
            "label": "male",
            "group": "",
            "fold": [*range(5)] * 2,
        }
    ).to_csv("g.csv", index=False)
    assert main(["split", "--manifest", "g.csv", *args, "--out", "x.csv"]) == 2
    assert message in capsys.readouterr().err
    assert not Path("x.csv").exists()


def test_official_split_follows_list_eval_partition(tiny_celeba, chdir_tmp, capsys):
    assert main(["label", "--task", "gender", "--celeba", str(tiny_celeba), "--out", "g.csv",
                 "--plot", "p.png"]) == 0  # fmt: skip
    assert main(["split", "--manifest", "g.csv", "--split", "official", "--out", "s.csv"]) == 0
    out = pd.read_csv("s.csv")
    truth = celeba.read_partition(tiny_celeba / "list_eval_partition.txt")
    expected = truth.loc[[Path(p).name for p in out["path"]]].map({0: "train", 1: "val", 2: "test"})
    assert out["split"].tolist() == expected.tolist()
    assert set(out["split"]) == {"train", "val", "test"}
    assert main(["split", "--manifest", "g.csv", "--split", "folds", "--test-fold", "0",
                 "--out", "x.csv"]) == 2  # fmt: skip
    assert "no 'fold' column" in capsys.readouterr().err
