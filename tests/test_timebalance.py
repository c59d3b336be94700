"""TimeBalance's teachers: their objectives on real decoded clips, through the device finish and the backbone."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator

import pytest
import torch
from torch.utils.data import DataLoader

from trainable import models
from trainable.data import transforms
from trainable.data.datasets import ClipSpec, ConsecutiveClips, TrainClips
from trainable.data.ucf101 import read_ucf101
from trainable.data.video import VideoReader
from trainable.catalog import TIMEBALANCE
from trainable.config import TrainConfig
from trainable.loop import run
from trainable.session import LocalSession
from trainable.stages import StageStore
from trainable.optim import PaperSchedule
from trainable.timebalance import Teacher, finetune, finish, pretrain, pretrain_loss, similarity, student_losses

from conftest import timebalance_config

STAGES = TIMEBALANCE.stages[:-1]  # the shared ones; the last is the student, the trial's own


def batch_of(tiny_dataset: Path, n: int = 2, frames: int = 4) -> dict:
    opts = transforms.SpatialOptions(input_size=32, resize_min=32, resize_max=36)
    data = ConsecutiveClips(read_ucf101(tiny_dataset).train[:3], VideoReader(cache=True), ClipSpec(frames, 2), n, transforms.geometric(opts))
    items = [data[i] for i in range(3)]
    batch = {k: torch.stack([item[k] for item in items]) for k in ("clips_a", "clips_b", "long")}
    return finish(batch, transforms.DeviceFinish(opts, {}))


def teacher() -> Teacher:
    backbone = models.build("resnet3d_tiny", 3, 4, 32, "tiny")
    return Teacher(backbone, models.TeacherProjection(backbone.num_features, hidden=32, out_features=16))


@pytest.mark.parametrize("objective", ["invariant", "distinctive"])
def test_teacher_objectives_train_the_backbone_and_the_head(tiny_dataset: Path, objective: str) -> None:
    torch.manual_seed(0)
    batch = batch_of(tiny_dataset)
    assert batch["clips_a"].shape == (3, 2, 3, 4, 32, 32) and batch["long"].shape == (3, 3, 4, 32, 32)
    net = teacher()
    loss = pretrain_loss(objective, net, batch, temperature=0.1)
    assert torch.isfinite(loss)
    loss.backward()
    for part in (net.backbone, net.projection):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    # a few steps of Adam lower the loss on the same batch: the objective can be learned
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = None
    for _ in range(15):
        optimizer.zero_grad()
        loss = pretrain_loss(objective, net, batch, temperature=0.1)
        first = loss.item() if first is None else first
        loss.backward()
        optimizer.step()
    assert loss.item() < first


def test_the_long_clip_must_split_into_the_clips(tiny_dataset: Path) -> None:
    batch = batch_of(tiny_dataset, n=3, frames=4)
    with pytest.raises(ValueError, match="4 time steps do not split into 3"):
        pretrain_loss("distinctive", teacher(), batch, 0.1)
    with pytest.raises(TypeError, match="needs a 3D-ResNet"):
        Teacher(models.build("timesformer_tiny", 3, 4, 32, "tiny"), models.TeacherProjection(8))


def test_similarity_is_one_for_a_video_whose_clips_are_the_same(tiny_dataset: Path) -> None:
    torch.manual_seed(0)
    batch = batch_of(tiny_dataset)
    clips = batch["clips_a"].clone()
    clips[0, 1] = clips[0, 0]  # video 0: both clips identical
    invariant, distinctive = teacher(), teacher()
    s = similarity(invariant, distinctive, clips)
    assert s.shape == (3,) and s[0].item() == pytest.approx(1.0, abs=1e-5) and bool(((s >= 0) & (s <= 1)).all())
    assert invariant.training and distinctive.training  # modes restored


def test_paper_schedule_warms_up_then_halves_on_a_plateau() -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.Adam(params, lr=1.0)
    schedule = PaperSchedule(optimizer, lr=1e-3, warmup_epochs=2, steps_per_epoch=2, patience=1)
    seen = [schedule.current]
    for _ in range(4):
        schedule.after_step()
        seen.append(schedule.current)
    assert seen == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])  # linear over the 4 warm-up steps
    for loss in (1.0, 0.5, 0.5, 0.5):  # improves, then stalls: halved after `patience` epochs without progress
        schedule.after_epoch(loss)
    assert schedule.current == pytest.approx(5e-4)
    again = PaperSchedule(torch.optim.Adam(params, lr=1.0), lr=1e-3, warmup_epochs=2, steps_per_epoch=2, patience=1)
    again.load_state_dict(schedule.state_dict())
    assert again.current == pytest.approx(5e-4) and again.step_count == 4


def endless(tiny_dataset: Path, n: int = 2) -> Iterator[dict]:
    opts = transforms.SpatialOptions(input_size=32, resize_min=32, resize_max=36)
    data = ConsecutiveClips(read_ucf101(tiny_dataset).train, VideoReader(cache=True), ClipSpec(4, 2), n, transforms.geometric(opts))
    while True:
        yield from DataLoader(data, batch_size=3, shuffle=True, drop_last=True)


def finished(batches: Iterator[dict]) -> Iterator[dict]:
    """ConsecutiveClips batches with the device part of their augmentation done, as ``engine.endless_batches`` gives them."""
    device_finish = transforms.DeviceFinish(transforms.SpatialOptions(input_size=32, resize_min=32, resize_max=36), {})
    return (finish(batch, device_finish) for batch in batches)


@pytest.mark.parametrize("objective", ["invariant", "distinctive"])
def test_a_pretrained_teacher_is_a_stage_result_the_next_trial_loads(tiny_dataset: Path, tmp_path: Path, objective: str) -> None:
    """Pretraining reports every epoch; through the stage store the second trial loads the first one's weights."""
    rows: list[dict] = []

    def build(folder: Path) -> None:
        torch.manual_seed(0)
        net = teacher()
        pretrain(objective, net, 0.1, batches=finished(endless(tiny_dataset)), device=torch.device("cpu"),
                 epochs=2, steps=2, lr=1e-3, warmup_epochs=1, on_epoch=rows.append)  # fmt: skip
        torch.save(net.state_dict(), folder / "teacher.pt")

    stages = StageStore(tmp_path / "store")
    depends = {"objective": objective, "backbone": "resnet3d_tiny", "seed": 0}
    first = stages.get(f"pretrain_{objective}", depends, build)
    assert [r["epoch"] for r in rows] == [1, 2] and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert rows[0]["lr"] == pytest.approx(1e-3) and rows[0]["epoch_time_s"] > 0  # warmed up over epoch 1's 2 steps
    again = stages.get(f"pretrain_{objective}", depends, build)
    assert again.reused and len(rows) == 2  # not trained twice
    loaded = teacher()
    loaded.load_state_dict(torch.load(again.path / "teacher.pt"))
    saved = torch.load(first.path / "teacher.pt")
    assert all(torch.equal(loaded.state_dict()[k], saved[k]) for k in saved)


def test_student_loss_is_cross_entropy_plus_omega_times_the_distilled_mix() -> None:
    # two labeled clips (class 0, uniform logits) then one unlabeled; teachers certain of opposite classes
    logits = torch.zeros(3, 2, requires_grad=True)
    p_i, p_d = torch.tensor([[1.0, 0.0]] * 3), torch.tensor([[0.0, 1.0]] * 3)
    s = torch.tensor([1.0, 0.0, 0.5])  # the mix: [1, 0], [0, 1], [0.5, 0.5]
    total, sup, distilled = student_losses(logits[:2], torch.tensor([0, 0]), logits, p_i, p_d, s, omega=2.0)
    assert sup.item() == pytest.approx(math.log(2))  # uniform over two classes
    assert distilled.item() == pytest.approx((0.5 + 0.5 + 0.0) / 3)  # ‖p_T − (½, ½)‖² per clip, averaged
    assert total.item() == pytest.approx(math.log(2) + 2.0 * 1 / 3)
    total.backward()
    assert logits.grad is not None and logits.grad[2].abs().sum() == 0  # the unlabeled clip already matches its mix


def test_finetuning_a_teacher_fits_the_labeled_clips(tiny_dataset: Path) -> None:
    torch.manual_seed(0)
    opts = transforms.SpatialOptions(input_size=32, resize_min=32, resize_max=32)
    labeled = TrainClips(read_ucf101(tiny_dataset).train[::4], VideoReader(cache=True), {"teacher": ClipSpec(4, 2)},
                         {"labeled": transforms.geometric(opts)})  # fmt: skip

    def batches() -> Iterator[dict]:
        while True:
            yield from DataLoader(labeled, batch_size=6, shuffle=True, drop_last=True)

    net = teacher()
    rows: list[dict] = []
    weak = transforms.DeviceFinish(opts, {"teacher_labeled": "weak"})
    finetune({"invariant": net.backbone}, "teacher_labeled", batches=map(weak, batches()), device=torch.device("cpu"),
             epochs=6, steps=3, lr=3e-3, warmup_epochs=1, on_epoch=rows.append)  # fmt: skip
    assert len(rows) == 6 and rows[-1]["loss"] < rows[0]["loss"]  # cross entropy falls on the labeled set


def run_timebalance(config: dict, stage_root: Path) -> tuple[list[dict], LocalSession]:
    reports: list[dict] = []
    session = LocalSession(on_report=reports.append, stage_root=str(stage_root))
    run(TrainConfig.parse(config), session)
    return reports, session


def test_a_timebalance_run_builds_its_stages_once_and_reuses_them_by_what_they_depend_on(tiny_dataset: Path, tmp_path: Path) -> None:
    """omega is the student's alone: a second run reuses all three stages; another seed rebuilds them all; another
    labeled subset keeps the pretrained teachers and fine-tunes again."""
    config = timebalance_config(tiny_dataset)
    reports, first = run_timebalance(config, tmp_path)
    assert [(r["stage"], r["epoch"]) for r in reports] == [("student", 1), ("student", 2)]
    assert all(math.isfinite(r["loss_pl"]) and r["loss"] == pytest.approx(r["loss_sup"] + r["loss_pl"]) for r in reports)
    assert math.isnan(reports[0]["mask_rate_primary"]) and 0 <= reports[-1]["top1"] <= 100
    built = first.stages.sink.stages
    assert [(r["stage"], r["reused"]) for r in built] == [(s, False) for s in STAGES]
    # every stage reported each of its 2 epochs; the fine-tuned teachers' test accuracy on the last one
    assert [(e["stage"], e["epoch"]) for e in first.stages.sink.epochs] == [(s, e) for s in STAGES for e in (1, 2)]
    last = first.stages.sink.epochs[-1]
    assert 0 <= last["top1"] <= 100 and 0 <= last["aux_top1"] <= 100 and "top1" not in first.stages.sink.epochs[-2]

    scores = json.loads((Path(built[2]["path"]) / "similarity.json").read_text())
    assert len(scores["by_video"]) == 3 * 8 and all(0.0 <= s <= 1.0 for s in scores["by_video"].values())
    assert sorted(scores["by_class"]) == sorted(read_ucf101(tiny_dataset).classes)

    _, other_omega = run_timebalance({**config, "omega": 3.0}, tmp_path)
    assert [(r["stage"], r["reused"], r["stage_key"]) for r in other_omega.stages.sink.stages] == [
        (r["stage"], True, r["stage_key"]) for r in built
    ]
    assert other_omega.stages.sink.epochs == [] and all(r["built_by"] == first.stages.owner for r in other_omega.stages.sink.stages)

    _, other_seed = run_timebalance({**config, "seed": 1}, tmp_path)
    assert [r["reused"] for r in other_seed.stages.sink.stages] == [False, False, False]

    _, other_split = run_timebalance({**config, "labeled_per_class": 3}, tmp_path)
    assert [(r["stage"], r["reused"]) for r in other_split.stages.sink.stages] == [
        ("pretrain_invariant", True), ("pretrain_distinctive", True), ("finetune_teachers", False)
    ]


def test_a_student_resumes_like_an_uninterrupted_one_from_either_checkpoint_format(tiny_dataset: Path, tmp_path: Path) -> None:
    """The driver's resume holds for TimeBalance's student too, and a checkpoint a student wrote before the driver
    was shared (its optimizer and schedule under ``optimizer`` and ``schedule``) still resumes."""
    values = timebalance_config(tiny_dataset, steps_per_epoch=1, test_clips=1, pretrain_epochs=1, finetune_epochs=1)
    run_timebalance(values, tmp_path)  # builds the stages; the runs below all reuse them
    straight, _ = run_timebalance(values, tmp_path)
    config = TrainConfig.parse(values)

    class Crash(Exception):
        pass

    for legacy in (False, True):
        resumed: list[dict] = []

        def crash_after_first_epoch(metrics: dict) -> None:
            resumed.append(metrics)
            if metrics["epoch"] == 1:
                raise Crash

        session = LocalSession(on_report=crash_after_first_epoch, stage_root=str(tmp_path))
        with pytest.raises(Crash):
            run(config, session)
        if legacy:
            (state,) = session.state.pop("optimizers").values()
            session.state.update(optimizer=state["optimizer"], schedule=state["scheduler"])
        run(config, session)
        assert [m["epoch"] for m in resumed] == [1, 2]
        for key in ("loss", "loss_sup", "loss_pl", "top1", "lr"):
            assert resumed[1][key] == pytest.approx(straight[1][key], rel=1e-6), (legacy, key)


def test_the_student_starts_from_the_distinctive_teacher_or_from_scratch(tiny_dataset: Path, tmp_path: Path) -> None:
    config = timebalance_config(tiny_dataset, epochs=1, steps_per_epoch=1, lr=1e-4)  # Adam moves each weight by about lr
    _, session = run_timebalance(config, tmp_path)
    pretrained = torch.load(Path(session.stages.sink.stages[1]["path"]) / "teacher.pt")
    # after one step the student is still the pretrained backbone, give or take lr; a scratch student is not
    student = session.state["nets"]["primary"]
    _, scratch = run_timebalance({**config, "student_init": "scratch"}, tmp_path)
    stem = "backbone.blocks.0.conv.weight"
    started = student[stem] - pretrained[stem]
    fresh = scratch.state["nets"]["primary"][stem] - pretrained[stem]
    assert started.abs().max() < 0.01 < fresh.abs().max()


@pytest.mark.parametrize("objective", ["invariant", "distinctive"])
def test_a_teacher_stage_trains_under_bf16_autocast_with_float32_losses(tiny_dataset: Path, objective: str) -> None:
    """``precision: bf16``'s path, on the CPU: the backbone runs in bf16, the projections and the loss in float32."""
    torch.manual_seed(0)
    net, rows = teacher(), []
    batch = batch_of(tiny_dataset)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert net.project(batch["clips_a"]).dtype == torch.float32
    pretrain(objective, net, 0.1, batches=finished(endless(tiny_dataset)), device=torch.device("cpu"), epochs=2, steps=2, lr=1e-3, warmup_epochs=0,
             on_epoch=rows.append, autocast=torch.autocast("cpu", dtype=torch.bfloat16))  # fmt: skip
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)


def test_two_train_workers_share_the_stages_and_train_the_student_together(ray_local: str, tiny_dataset: Path, tmp_path: Path) -> None:
    """The trial's real worker function on two Ray Train workers: one builds each stage while the other waits
    for it (each worker's log says which it did), rank 0 records them, and the student trains data-parallel (its
    test accuracy summed over both)."""
    import re

    import ray._private.worker
    from ray.train import RunConfig, ScalingConfig

    from results.ledger import EpochWriter
    from results.store import Store
    from results.tables import read
    from search.backend import trial_trainer
    from trainable.worker import WRITER_KEY, train_loop_per_worker

    store = Store(tmp_path / "store")
    config = timebalance_config(tiny_dataset, epochs=1, steps_per_epoch=2)
    result = trial_trainer(
        train_loop_per_worker,
        train_loop_config={**config, WRITER_KEY: EpochWriter(store, "two", "t0", 0)},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=f"two-workers-{tmp_path.name}", storage_path=str(tmp_path / "ray")),
    ).fit()
    assert result.error is None
    assert result.metrics["stage"] == "student" and result.metrics["epoch"] == 1 and 0 <= result.metrics["top1"] <= 100
    stages = read(store, "stages", "two").to_pylist()
    assert sorted((r["stage"], r["reused"], r["built_by"]) for r in stages) == sorted((s, False, "t0") for s in STAGES)
    epochs = read(store, "epochs", "two").to_pylist()
    assert sorted(e["stage"] for e in epochs) == sorted(STAGES)  # one epoch each, written once
    assert len(list((tmp_path / "store" / "stage_results").glob("*/*/done.json"))) == 3
    # Who built and who waited, from the workers' own logs (Ray writes each worker's stdout to a file).
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    said = [m.groups() for f in logs.glob("worker-*.out") for m in
            re.finditer(rf"two-workers-{tmp_path.name}: stage (\w+) \w+: rank (\d) (built it|reused it)", f.read_text())]  # fmt: skip
    for stage in STAGES:  # exactly one worker built each stage; the other waited for it (or found it done)
        did = sorted((what, rank) for name, rank, what in said if name == stage)
        assert [what for what, _ in did] == ["built it", "reused it"] and {rank for _, rank in did} == {"0", "1"}, said
