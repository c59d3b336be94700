"""A bad config fails before anything is built, naming the key and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trainable.config import ConfigError, TrainConfig
from trainable.loop import run_local

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
    assert TrainConfig.parse({**base, "method": "fixmatch", "aux_backbone": "timesformer_s"}).aux_backbone is None
    assert not TrainConfig.parse({**base, "beta": 0.0}).uses_contrastive


def test_tiny_scale_makes_every_stage_as_long_as_the_training(tmp_path: Path) -> None:
    """``--set epochs=N --set steps_per_epoch=M`` at toy scale: each of TimeBalance's stages is N x M steps too."""
    full = TrainConfig.parse({**tiny_config(tmp_path), "method": "timebalance", "scale": "full", "input_size": 32})
    assert (full.pretrain_epochs, full.finetune_epochs, full.teacher_warmup_epochs, full.ssl_frames) == (250, 50, 10, 16)
    tiny = TrainConfig.parse({**tiny_config(tmp_path), "method": "timebalance", "scale": "tiny", "epochs": 3, "pretrain_epochs": 250})
    assert (tiny.pretrain_epochs, tiny.finetune_epochs, tiny.teacher_warmup_epochs, tiny.ssl_frames) == (3, 3, 0, 8)


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
    assert methods.get("actnetformer").teachers == methods.get("cmpl").teachers == {"primary": "aux", "aux": "primary"}
