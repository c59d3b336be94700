"""Paper fidelity: every paper space runs at toy scale, augmentation switches, GPU settings on CPU."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from search.space import load
from trainable import methods
from trainable.config import TrainConfig
from trainable.data.datasets import ClipSpec, TrainClips
from trainable.data.index import VideoRecord
from trainable.data.subsets import labeled_subset
from trainable.data.synthetic import encode
from trainable.data.ucf101 import read_ucf101
from trainable.data.video import VideoReader
from trainable.loop import build_data, run, run_local
from trainable.session import LocalSession

from conftest import ObservingSession, tiny_config

ROOT = Path(__file__).resolve().parents[1]
PAPER = sorted((ROOT / "spaces" / "paper").glob("*.yaml"))


def toy_overrides(data: Path) -> dict[str, Any]:
    """What the README's toy command sets, pointed at the session's tiny synthetic dataset."""
    tiny = tiny_config(data)
    keys = [k for k in tiny if k.startswith("synthetic_")]
    return {"dataset": "synthetic", "scale": "tiny", "epochs": 1, "steps_per_epoch": 1, **{k: tiny[k] for k in keys}}


def test_the_paper_spaces_are_all_there() -> None:
    names = {p.stem for p in PAPER}
    assert names == {"tau", "batch_ratio", "gamma", "beta", "backbones", "augmentations", "methods", "frame_rates", "timebalance_omega"}
    for path in PAPER:
        space = load(path)
        assert space.spec.scheduler.type == "none" and len(space.spec.seed_list) == 3
        assert space.num_trials == 3 * len(space.grid_cells())
        assert "Table" in path.read_text() or "Fig." in path.read_text()  # says what it reproduces


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_space_runs_every_cell_at_toy_scale(path: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    space = load(path, toy_overrides(tiny_dataset), seeds=[0])
    points = space.grid_points()
    assert len(points) == len(space.grid_cells())
    for point in points:
        history: list[dict[str, Any]] = []
        # one stage folder, as one store: TimeBalance's omega cells share their teachers
        run_local({**space.base, **point}, on_report=history.append, stage_root=str(tmp_path))
        assert [m["epoch"] for m in history] == [1] and math.isfinite(history[0]["loss"])


def test_tiny_scale_keeps_the_pairing_distinct() -> None:
    from trainable import models

    sizes = {n: sum(p.numel() for p in models.build(n, 10, 8, 32, "tiny").parameters()) for n in models.available()}
    assert sizes["resnet3d_50"] != sizes["resnet3d_18"] and sizes["timesformer_b"] > sizes["timesformer_s"]
    assert max(sizes.values()) < 1_000_000
    assert (TrainConfig.parse({"scale": "tiny"}).input_size, TrainConfig.parse({"scale": "tiny"}).test_clips) == (32, 1)
    # An explicit key wins over what the scale fills in.
    config = TrainConfig.parse({"scale": "tiny", "input_size": 24, "resize_min": 24, "resize_max": 28, "test_clips": 5})
    assert (config.input_size, config.test_clips, config.primary_frames) == (24, 5, 8)


def test_spatial_switch_turns_off_the_strong_augmentation(tiny_dataset: Path) -> None:
    on = build_data(TrainConfig.parse(tiny_config(tiny_dataset)), methods.get("fixmatch"), LocalSession())
    off = build_data(TrainConfig.parse(tiny_config(tiny_dataset, spatial_aug=False)), methods.get("fixmatch"), LocalSession())
    assert on.finish.views["primary_strong"] == "strong" and on.finish.views["primary_weak"] == "weak"
    assert off.finish.views["primary_strong"] == off.finish.views["primary_weak"] == "weak"


def test_temporal_switch_gives_both_models_one_clip_at_one_frame_rate(tiny_dataset: Path, tmp_path: Path) -> None:
    config = TrainConfig.parse(tiny_config(tiny_dataset, temporal_aug=False, primary_stride=2, aux_stride=1))
    data = build_data(config, methods.get("actnetformer"), LocalSession())
    assert data.unlabeled.clips["aux"].stride == data.unlabeled.clips["primary"].stride == 2
    # A video whose frame i is uniformly grey level 8 i: the first frame of a clip tells where it starts.
    path = tmp_path / "ramp.avi"
    encode(path, np.stack([np.full((32, 32, 3), 8 * i, np.uint8) for i in range(30)]), fps=10)
    record = [VideoRecord(str(path), 0, "ramp.avi")]
    clips = {"primary": ClipSpec(4, 2), "aux": ClipSpec(4, 2)}
    identity = {"v": lambda frames: frames.float().mean(dim=(1, 2, 3))}  # per-frame grey level
    shared = TrainClips(record, VideoReader(), clips, identity, shared_start=True)
    separate = TrainClips(record, VideoReader(), clips, identity, shared_start=False)
    torch.manual_seed(0)
    assert all(torch.allclose(i["primary_v"], i["aux_v"], atol=3) for i in (shared[0] for _ in range(8)))
    assert any(not torch.allclose(i["primary_v"], i["aux_v"], atol=3) for i in (separate[0] for _ in range(8)))


def test_labeled_fraction_takes_a_share_of_each_class(tiny_dataset: Path) -> None:
    train = read_ucf101(tiny_dataset).train  # 8 videos in each of 3 classes
    split = labeled_subset(train, 1, seed=0, fraction=0.25)
    assert np.bincount([r.label for r in split.labeled]).tolist() == [2, 2, 2]
    assert len(labeled_subset(train, 1, seed=0, fraction=0.01).labeled) == 3  # at least one per class
    with pytest.raises(Exception, match="labeled_fraction: give labeled_per_class or labeled_fraction"):
        TrainConfig.parse(tiny_config(tiny_dataset, labeled_per_class=2, labeled_fraction=0.1))


@pytest.mark.parametrize("method", ["actnetformer", "timebalance"])
def test_channels_last_puts_the_3d_cnns_clips_and_weights_in_channels_last_3d(tiny_dataset: Path, method: str) -> None:
    """``channels_last``: every 3D CNN the driver trains gets its weights and its clips in channels_last_3d (and
    neither without it); the transformer auxiliary is left as it is (it has no 3D convolution past its patches)."""
    # One step of each stage and of the training, one test view: enough to see what the flag does.
    extra = {"scale": "tiny", "clips_per_video": 2, "ssl_batch_size": 2} if method == "timebalance" else {"threshold": 0.0}
    extra.update(steps_per_epoch=1, test_clips=1)
    layouts = {}
    for flag in (True, False):
        history: list[dict[str, Any]] = []
        session = ObservingSession(on_report=history.append)
        config = tiny_config(tiny_dataset, method=method, channels_last=flag, epochs=1, **extra)
        config["primary_backbone"] = "resnet3d_tiny"
        run(TrainConfig.parse(config), session)
        assert math.isfinite(history[0]["loss"])
        layouts[flag] = {(clips, weight) for clips, weight, _ in session.seen["net0"]}  # the primary, a 3D CNN
    assert layouts == {True: {(True, True)}, False: {(False, False)}}