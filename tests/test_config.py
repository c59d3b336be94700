"""A bad config fails before anything is built, naming the key and what is allowed."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

from trainable import catalog, loop
from trainable.config import ConfigError, TrainConfig, method_keys, refused_keys
from trainable.data.synthetic import ensure_synthetic
from trainable.loop import run_local
from trainable.session import LocalSession

from conftest import tiny_config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"primary_backbone": "resnet3d_34"}, r"primary_backbone: unknown backbone 'resnet3d_34'; allowed: .*resnet3d_50"),
        ({"aux_backbone": "vit_huge"}, r"aux_backbone: unknown backbone 'vit_huge'; allowed: .*timesformer_s"),
        ({"threshold": 1.5}, r"threshold: Input should be less than or equal to 1 \(got 1.5\)"),
        ({"threshold": -0.1}, r"threshold: Input should be greater than or equal to 0"),
        ({"mu": 0}, r"mu: Input should be greater than or equal to 1 \(got 0\)"),
        ({"method": "mixmatch"}, r"method: Input should be 'supervised', 'fixmatch', 'cmpl', 'actnetformer' or 'timebalance'"),
        ({"thresold": 0.9}, r"thresold: unknown key; allowed: .*threshold"),
        ({"dataset": "ucf101", "data_root": None}, r"data_root: required for dataset 'ucf101'"),
        ({"batch_size": 1, "mu": 1}, r"mu: the contrastive loss needs batch_size \* mu >= 2"),
        ({"method": "timebalance", "primary_backbone": "timesformer_s"}, r"primary_backbone: timebalance needs a 3D-ResNet"),
        ({"method": "timebalance", "ssl_frames": 6}, r"ssl_frames: the long clip's 6 frames must split into clips_per_video \(4\)"),
        ({"method": "timebalance", "student_init": "tclr"}, r"student_init: Input should be 'distinctive' or 'scratch'"),
    ],
)
def test_invalid_config_names_the_key(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig.parse(tiny_config(tmp_path, **overrides), source="config")


def test_missing_dataset_folder_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data_root: dataset folder .*nowhere does not exist"):
        run_local(tiny_config(tmp_path, dataset="ucf101", data_root=str(tmp_path / "nowhere")))


def test_method_defaults_decide_the_auxiliary(tmp_path: Path) -> None:
    base = {k: v for k, v in tiny_config(tmp_path).items() if k != "aux_backbone"}
    assert TrainConfig.parse({**base, "method": "actnetformer"}).aux_backbone == "timesformer_s"
    assert TrainConfig.parse({**base, "method": "cmpl"}).aux_backbone == "resnet3d_18"
    with pytest.raises(ConfigError, match=r"aux_backbone: method fixmatch does not use it \(fixmatch trains one model"):
        TrainConfig.parse({**base, "method": "fixmatch", "aux_backbone": "timesformer_s"})
    assert TrainConfig.parse({**tiny_config(tmp_path, method="fixmatch")}).aux_backbone is None
    assert not TrainConfig.parse({**base, "beta": 0.0}).uses_contrastive


def test_tiny_scale_makes_every_stage_as_long_as_the_training(tmp_path: Path) -> None:
    """``--set epochs=N --set steps_per_epoch=M`` at toy scale: each of TimeBalance's stages is N x M steps too."""
    full = TrainConfig.parse(tiny_config(tmp_path, method="timebalance", scale="full", input_size=32))
    assert (full.pretrain_epochs, full.finetune_epochs, full.teacher_warmup_epochs, full.ssl_frames) == (250, 50, 10, 16)
    tiny = TrainConfig.parse(tiny_config(tmp_path, method="timebalance", scale="tiny", epochs=3))
    assert (tiny.pretrain_epochs, tiny.finetune_epochs, tiny.teacher_warmup_epochs, tiny.ssl_frames) == (3, 3, 0, 8)
    # A stage length given explicitly is kept (an explicit key wins over what ``scale: tiny`` fills in).
    assert TrainConfig.parse(tiny_config(tmp_path, method="timebalance", scale="tiny", epochs=3, pretrain_epochs=5)).pretrain_epochs == 5


def test_validating_a_config_imports_neither_torch_nor_ray() -> None:
    # `python -m search check` must answer in about a second; torch alone takes several to import.
    code = (
        "import sys\nimport search.__main__, search.space, trainable.config\n"
        "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_catalog_matches_the_models_and_methods() -> None:
    # The torch-free declarations and the implementations name the same things (they also check at import).
    from trainable import catalog, methods, models

    assert models.available() == sorted(catalog.BACKBONES)
    # every method has the shared step's class but the pipelines, which train in their own module
    assert {name: m.spec for name, m in methods.METHODS.items()} == {n: m for n, m in catalog.METHODS.items() if not m.stages}
    assert [n for n, m in catalog.METHODS.items() if m.stages] == ["timebalance"]
    assert methods.get("actnetformer").labelled_by == methods.get("cmpl").labelled_by == {"primary": "aux", "aux": "primary"}


# A value other than the default for every key, valid on its own (so a refusal can only be the method's).
OTHER_VALUES: dict[str, Any] = {
    "aux_backbone": "resnet3d_18", "aux_optimizer": "adamw", "aux_lr": 0.5, "aux_weight_decay": 0.5,
    "labeled_fraction": 0.5, "labeled_seed": 7, "steps_per_epoch": 3, "grad_clip": 1.0, "data_root": "/nowhere",
    "synthetic_root": "/nowhere", "mu": 2, "beta": 1.0, "resize_min": 300, "primary_backbone": "resnet3d_18",
}  # fmt: skip


def other_value(key: str) -> Any:
    if key in OTHER_VALUES:
        return OTHER_VALUES[key]
    field = TrainConfig.model_fields[key]
    default, options = field.default, typing.get_args(field.annotation)
    if isinstance(default, bool):
        return not default
    if typing.get_origin(field.annotation) is typing.Literal:
        return next(option for option in options if option != default)
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default / 2 if default else 0.5
    raise AssertionError(f"no other value for {key} (default {default!r}): add it to OTHER_VALUES")


@pytest.mark.parametrize("method", list(catalog.METHODS))
def test_every_key_is_read_by_the_method_or_refused_for_it(method: str) -> None:
    """Each key of the schema either belongs to what ``method`` reads or, given another value, is refused with the
    key, the method and why; at its default it is the same as absent."""
    read, refused = method_keys(method), refused_keys(method)
    assert read | set(refused) == set(TrainConfig.model_fields) and not read & set(refused)
    for key in TrainConfig.model_fields:
        if key == "method":
            continue
        values = {"method": method, key: other_value(key)}
        if key in ("data_root", "dataset"):
            values.update(dataset="ucf101", data_root="/nowhere")
        if key in refused:
            with pytest.raises(ConfigError, match=rf"config: {key}: method {method} does not use it \(.+\)"):
                TrainConfig.parse(values)
            TrainConfig.parse({"method": method, key: TrainConfig.model_fields[key].default})  # its default: accepted
        else:
            try:
                TrainConfig.parse(values)
            except ConfigError as exc:  # only the key's own rules, never "does not use it"
                assert "does not use it" not in str(exc), str(exc)


class Recording(TrainConfig):
    """A config that notes which of its keys the run reads."""

    def __getattribute__(self, name: str) -> Any:
        if name in TrainConfig.model_fields:
            READ.add(name)
        return super().__getattribute__(name)


READ: set[str] = set()
# Keys a method reads only with another dataset or another value of a key than the runs below use.
CONDITIONAL = {
    "data_root": "real datasets only", "split": "real datasets' official splits only",
}  # fmt: skip


@pytest.mark.parametrize("method", list(catalog.METHODS))
def test_a_run_reads_exactly_the_keys_its_method_declares(method: str, tiny_dataset: Path) -> None:
    """Every key ``method_keys`` says ``method`` reads, a real (one-step) run of it reads: a key the config accepts
    for a method whose run never looks at it (``batchnorm`` for TimeBalance's student, once) fails here. (A run
    also reads keys into settings its method then ignores, such as the weights of terms it lacks; those are
    refused by the test above.)"""
    values = tiny_config(tiny_dataset, method=method, epochs=1, steps_per_epoch=1, test_clips=1)
    if method == "timebalance":
        values.update(scale="tiny", clips_per_video=2, ssl_batch_size=2)
    cfg = Recording.model_validate(values)
    READ.clear()
    loop.run(cfg, LocalSession())
    unread = method_keys(method) - READ - {"method"}
    assert unread <= set(CONDITIONAL), f"{method} declares keys no run reads: {sorted(unread - set(CONDITIONAL))}"


def test_an_explicit_key_wins_over_scale_tiny(tmp_path: Path) -> None:
    """``scale: tiny`` fills in its input settings only where the config is silent: a still-frame control is
    ``scale: tiny`` with ``primary_frames: 1``, and its clips are one frame long."""
    from trainable import methods
    from trainable.loop import build_data

    still = TrainConfig.parse(tiny_config(tmp_path, method="supervised", scale="tiny", primary_frames=1))
    assert (still.primary_frames, still.primary_stride, still.input_size) == (1, 4, 32)  # stride and size: tiny's
    silent = {k: v for k, v in tiny_config(tmp_path, method="supervised").items() if k not in ("primary_frames", "input_size")}
    assert TrainConfig.parse({**silent, "scale": "tiny"}).primary_frames == 8
    ensure_synthetic(still.synthetic_spec(), still.synthetic_root, progress=False)
    clip = build_data(still, methods.get("supervised"), LocalSession()).labeled[0]["primary_labeled"]
    assert clip.shape[-4] == 1  # (C, T, H, W) before the device finish: one frame


def test_set_scale_tiny_on_a_space_replaces_what_the_file_sets_for_it(tmp_path: Path) -> None:
    """``--set scale=tiny`` on a paper space is a toy run: the keys the scale fills in replace the file's, as any
    ``--set`` replaces its key; another ``--set`` still wins over the scale."""
    from search.space import load

    text = (Path(__file__).parents[1] / "spaces/paper/tau.yaml").read_text().replace("/data/ucf101", str(tmp_path))
    (tmp_path / "tau.yaml").write_text(text)
    space = load(str(tmp_path / "tau.yaml"), overrides={"dataset": "synthetic", "scale": "tiny", "primary_stride": 2})
    cfg = TrainConfig.parse({**space.base, **space.grid_cells()[0]})
    assert (cfg.input_size, cfg.primary_frames, cfg.primary_stride, cfg.test_clips) == (32, 8, 2, 1)
    assert TrainConfig.parse(load(str(tmp_path / "tau.yaml")).base).input_size == 224  # without the --set


# A space as written before the keys' rename: every old name and value, which must still run as it did.
OLD_NAMES = {"resize_min": "scale_min", "resize_max": "scale_max", "test_clips": "views_clips", "test_crops": "views_crops"}


def _old_named(text: str) -> str:
    for new, old in OLD_NAMES.items():
        text = text.replace(f"  {new}:", f"  {old}:")
    return text.replace("base:\n", "base:\n  split_seed: 3\n  batchnorm: split\n", 1)


def test_a_space_with_renamed_keys_still_checks_and_names_the_new_keys(tmp_path: Path) -> None:
    """``search check`` on a space with the old names passes (exit 0) and warns once per old name with the new
    one; the configuration it runs is the one the new names give."""
    from search.space import load

    root = Path(__file__).parents[1]
    old = tmp_path / "old.yaml"
    old.write_text(_old_named((root / "spaces/demo.yaml").read_text()))
    out = subprocess.run([sys.executable, "-m", "search", "check", str(old), "--set", "scale_max=44"],
                         capture_output=True, text=True, cwd=root)  # fmt: skip
    assert out.returncode == 0, out.stderr
    warned = [line for line in out.stdout.splitlines() if line.startswith("  warning: ") and " renamed " in line]
    assert len(warned) == 7, out.stdout
    assert f"{old}: base.split_seed: renamed labeled_seed" in out.stdout
    assert f"{old}: base.batchnorm: 'split' renamed 'separate'" in out.stdout
    assert f"{old}: --set scale_max: renamed resize_max" in out.stdout
    new = load(root / "spaces/demo.yaml", {"resize_max": 44, "labeled_seed": 3, "batchnorm": "separate"})
    assert TrainConfig.parse(load(old, {"scale_max": 44}).base) == TrainConfig.parse(new.base)


def test_a_key_under_both_names_is_refused_in_one_line(tmp_path: Path) -> None:
    root = Path(__file__).parents[1]
    old = tmp_path / "both.yaml"
    old.write_text((root / "spaces/demo.yaml").read_text().replace("  resize_min: 32\n", "  resize_min: 32\n  scale_min: 32\n"))
    out = subprocess.run([sys.executable, "-m", "search", "check", str(old)], capture_output=True, text=True, cwd=root)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == f"error: {old}: base.scale_min: renamed resize_min, and both are given; keep only resize_min"


def test_an_old_name_in_a_config_warns_and_means_the_new_key() -> None:
    with pytest.warns(FutureWarning, match="views_clips: renamed test_clips"):
        config = TrainConfig.parse({"views_clips": 2, "batchnorm": "split"})
    assert (config.test_clips, config.batchnorm) == (2, "separate")


def test_ids_are_hashed_under_the_names_they_were_first_made_with() -> None:
    """A trial id and a stage key do not change with a rename: a store written before it resumes its trials and
    reuses its stage results. (``bench/curves`` was written under the old names: its 36 trials are all found.)"""
    import hashlib
    import json

    from results.store import Store
    from results.tables import connect
    from search.resume import Earlier, plan
    from search.space import load
    from trainable.stages import stage_key

    root = Path(__file__).parents[1]
    store = Store(str(root / "bench/curves"))
    columns = {row[0] for row in connect(store, "curves").execute("DESCRIBE trials").fetchall()}
    assert {"resize_min", "test_clips", "labeled_seed"} <= columns and not {"scale_min", "views_clips", "split_seed"} & columns
    earlier = Earlier.load(store, "curves", "top1")
    left = plan(load(root / "spaces/curves.yaml"), earlier)
    assert len(earlier.trials) == len(left.ended) == 36 and left.points == []
    before = hashlib.sha256(json.dumps({"stage": "s", "scale_min": 32, "split_hash": "ab"}, sort_keys=True).encode()).hexdigest()[:16]
    assert stage_key("s", {"resize_min": 32, "subset_hash": "ab"}) == before
