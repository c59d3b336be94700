"""The UCF-101, HMDB51 and Kinetics-400 readers on tiny copies of their official layouts, quirks included,
and the ``check`` command that reports what a copy lacks.

Every copy lists one video that is not on disk and holds one that is junk bytes under a video name, and
comes in two arrangements ("nested": lists and videos in the subfolders the official archives unpack to;
"flat": everything in the root) so that each reader is shown to find both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from trainable.data import read_index
from trainable.data.__main__ import main
from trainable.data.synthetic import encode
from trainable.data.ucf101 import read_ucf101

JUNK = b"\x00\x01 not a video \xfe\xff" * 4


@dataclass(frozen=True)
class Expected:
    classes: list[str]
    train: dict[str, int]  # record name -> label
    test: dict[str, int]
    missing: str
    corrupt: str  # the name of the unreadable record


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """One tiny encoded video, copied to every path where a dataset needs a readable one."""
    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    encode(path, np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8), fps=8)
    return path.read_bytes()


def write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def crlf(*lines: str) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode()


def ucf101_copy(root: Path, clip: bytes, nested: bool) -> Expected:
    lists, videos = ("ucfTrainTestlist/", "UCF-101/") if nested else ("", "")
    classes = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
    train = {f"{c}/v_{c}_g08_c01.avi": i for i, c in enumerate(classes)}
    test = {f"{c}/v_{c}_g01_c01.avi": i for i, c in enumerate(classes)}
    missing = "YoYo/v_YoYo_g09_c01.avi"
    write(
        root,
        {
            f"{lists}classInd.txt": crlf(*(f"{i + 1} {c}" for i, c in enumerate(classes))),
            f"{lists}trainlist01.txt": crlf(*(f"{n} {label + 1}" for n, label in train.items()), f"{missing} 3"),
            f"{lists}testlist01.txt": crlf(*test),
            f"{lists}trainlist02.txt": crlf(*(f"{n} {label + 1}" for n, label in test.items())),
            f"{lists}testlist02.txt": crlf(*train),
            # The disk spells the class HandStandPushups, in the folder and the file names alike.
            **{f"{videos}{n.replace('Handstand', 'HandStand')}": clip for n in [*train, *test]},
            f"{videos}YoYo/v_YoYo_g01_c01.avi": JUNK,
        },
    )
    return Expected(classes, train, test, missing, corrupt="YoYo/v_YoYo_g01_c01.avi")


def hmdb51_copy(root: Path, clip: bytes, nested: bool) -> Expected:
    splits, videos = ("testTrainMulti_7030_splits/", "videos/") if nested else ("", "")
    marks = {
        "brush_hair": {
            "Bam_&_Lola's_Brush_Hair_h_nm_np1_le_goo_0.avi": 1,
            "#20_Brushing_Hair_u_nm_np1_fr_goo_1.avi": 2,
            "Unused_brush_hair_f_nm_np1_ba_med_2.avi": 0,
        },
        "cartwheel": {
            "(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0.avi": 1,
            "Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8.avi": 2,
        },
        "sword_exercise": {
            "[Dream]_sword_exercise_f_cm_np1_ri_bad_1.avi": 1,
            "Blade_Of_Fury_-_Scene_1_sword_exercise_f_cm_np1_ri_med_3.avi": 2,
        },
    }
    classes = sorted(marks)
    missing = "sword_exercise/[Dream]_sword_exercise_f_cm_np1_ri_bad_1.avi"
    corrupt = "cartwheel/Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8.avi"
    # Trailing spaces, as in the official split files.
    files = {
        f"{splits}{c}_test_split1.txt": "".join(f"{v} {m} \n" for v, m in marks[c].items()).encode() for c in classes
    }
    files |= {f"{videos}{c}/{v}": clip for c in classes for v in marks[c]}
    del files[f"{videos}{missing}"]
    files[f"{videos}{corrupt}"] = JUNK
    write(root, files)

    def marked(mark: int) -> dict[str, int]:
        return {f"{c}/{v}": classes.index(c) for c in classes for v, m in marks[c].items() if m == mark}

    return Expected(classes, {n: label for n, label in marked(1).items() if n != missing}, marked(2), missing, corrupt)


def kinetics400_copy(root: Path, clip: bytes, nested: bool) -> Expected:
    annotations, val = ("annotations/", "validate") if nested else ("", "val")
    write(
        root,
        {
            f"{annotations}train.csv": b"label,youtube_id,time_start,time_end,split,is_cc\n"
            b"abseiling,--07WQ2iBlw,1,11,train,0\n"
            b'"passing American football (in game)",-8Wb_lmBx3U,10,20,train,0\n'
            b'"tying knot (not on a tie), or bow",abc123DEF45,0,10,train,0\n'
            b"abseiling,gone0000000,3,13,train,0\n",
            f"{annotations}validate.csv": b"label,youtube_id,time_start,time_end,split\n"
            b"abseiling,val00000001,5,15,val\n"
            b'"passing American football (in game)",val00000002,30,40,val\n',
        },
    )
    train = {
        "abseiling/--07WQ2iBlw_000001_000011.mp4": 0,
        "passing American football (in game)/-8Wb_lmBx3U_000010_000020.mp4": 1,
        "tying knot (not on a tie), or bow/abc123DEF45_000000_000010.mp4": 2,
    }
    test = {
        "abseiling/val00000001_000005_000015.mp4": 0,
        "passing American football (in game)/val00000002_000030_000040.mp4": 1,
    }
    corrupt = "passing American football (in game)/val00000002_000030_000040.mp4"

    def on_disk(folder: str, name: str) -> str:  # nested: class folders; flat: files straight in the folder
        return f"{folder}/{name if nested else name.rsplit('/', 1)[1]}"

    write(root, {on_disk("train", n): clip for n in train} | {on_disk(val, n): clip for n in test})
    write(root, {on_disk(val, corrupt): JUNK})
    classes = ["abseiling", "passing American football (in game)", "tying knot (not on a tie), or bow"]
    return Expected(classes, train, test, "abseiling/gone0000000_000003_000013.mp4", corrupt)


COPIES: dict[str, Callable[[Path, bytes, bool], Expected]] = {
    "ucf101": ucf101_copy,
    "hmdb51": hmdb51_copy,
    "kinetics400": kinetics400_copy,
}


@pytest.mark.parametrize("nested", [True, False], ids=["nested", "flat"])
@pytest.mark.parametrize("dataset", list(COPIES))
def test_reader_finds_classes_labels_and_missing_files(dataset: str, nested: bool, tmp_path: Path, clip: bytes) -> None:
    expected = COPIES[dataset](tmp_path, clip, nested)
    index = read_index(dataset, tmp_path, 1)
    assert index.classes == expected.classes
    assert {r.name: r.label for r in index.train} == expected.train
    assert {r.name: r.label for r in index.test} == expected.test
    assert index.missing == [expected.missing]
    # On a case-sensitive disk this also shows UCF-101's HandstandPushups found as HandStandPushups.
    assert all(Path(r.path).is_file() for r in index.train + index.test)


def test_ucf101_reads_the_asked_split(tmp_path: Path, clip: bytes) -> None:
    expected = ucf101_copy(tmp_path, clip, nested=True)
    index = read_ucf101(tmp_path, split=2)
    assert {r.name: r.label for r in index.train} == expected.test
    assert {r.name: r.label for r in index.test} == expected.train
    assert index.missing == []
    with pytest.raises(ValueError, match="split"):
        read_ucf101(tmp_path, split=4)


@pytest.mark.parametrize("dataset", list(COPIES))
def test_check_reports_counts_missing_and_unreadable(
    dataset: str, tmp_path: Path, clip: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = COPIES[dataset](tmp_path, clip, nested=True)
    assert main(["check", str(tmp_path), "--dataset", dataset, "--split", "1"]) == 0
    out = capsys.readouterr().out
    assert f"classes: {len(expected.classes)}\n" in out
    assert f"train: {len(expected.train)} videos\ntest: {len(expected.test)} videos\n" in out
    assert f"missing (listed, not on disk): 1\n  {expected.missing}\n" in out
    unreadable = out.split("unreadable (on disk, does not decode): ", 1)[1].splitlines()
    assert unreadable[0] == "1" and unreadable[1].startswith(f"  {expected.corrupt}: ") and len(unreadable) == 2


def test_layout_errors_exit_2_and_unknown_datasets_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", str(tmp_path / "nowhere"), "--dataset", "ucf101"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "brush_hair").mkdir()  # class folders but no split files
    assert main(["check", str(tmp_path), "--dataset", "hmdb51"]) == 2
    assert "_test_split1.txt" in capsys.readouterr().err
    with pytest.raises(ValueError, match="ucf101, hmdb51, kinetics400"):
        read_index("ucf-101", tmp_path, 1)
