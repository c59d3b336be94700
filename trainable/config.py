"""The training config: one flat, validated set of names shared by the YAML spaces, the loop and the Parquet columns.

Flat on purpose: a Tune parameter, a config field and a result column are then the same string.
A bad value fails here, before any model is built, with the key and what is allowed. Backbone and
method names come from ``trainable.catalog``, not from the models and methods, so this module (and
``python -m search check``) imports no torch.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trainable import catalog
from trainable.data.synthetic_spec import SyntheticSpec


# What ``scale: tiny`` sets where the config does not give the key itself (an explicit key wins, so ``scale: tiny``
# with ``primary_frames: 1`` is the still-frame control): the synthetic dataset's frame size, short clips, one
# test view, and what a CPU needs.
TINY_INPUT: dict[str, Any] = {
    "input_size": 32,
    "resize_min": 32,
    "resize_max": 40,
    "primary_frames": 8,
    "primary_stride": 4,
    "aux_frames": 8,
    "aux_stride": 2,
    "test_clips": 1,
    "test_crops": 1,
    "precision": "fp32",
    "loader_workers": 0,
    "pin_memory": False,
    "cache_decoded": True,
    # TimeBalance's teachers: n clips of 8 consecutive frames cover the synthetic video's 32 frames.
    "ssl_frames": 8,
    "ssl_stride": 1,
}


# Keys renamed so that a name has one meaning (``split`` is the official split 1-3, ``scale`` the model size, a view
# an entry of a training batch): the old name is still read for one release, with a warning naming the new one.
RENAMED_KEYS: dict[str, str] = {
    "split_seed": "labeled_seed", "views_clips": "test_clips", "views_crops": "test_crops",
    "scale_min": "resize_min", "scale_max": "resize_max",
}  # fmt: skip
RENAMED_VALUES: dict[str, dict[str, str]] = {"batchnorm": {"split": "separate"}}
# Names an id was first hashed under that are not config keys: the labeled subset's hash in a stage's depends.
_HASHED_AS = {"subset_hash": "split_hash"}


def renamed(values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``values`` under today's key names and values, and a note for each old one they used. Giving a key under
    both its names is refused: which one was meant cannot be told."""
    out, notes = dict(values), []
    for old, new in RENAMED_KEYS.items():
        if old not in out:
            continue
        if new in out:
            raise ValueError(f"{old}: renamed {new}, and both are given; keep only {new}")
        out[new] = out.pop(old)
        notes.append(f"{old}: renamed {new}; the old name is read until the next release")
    for key, values_map in RENAMED_VALUES.items():
        value = out.get(key)
        if isinstance(value, str) and value in values_map:
            out[key] = values_map[value]
            notes.append(f"{key}: {value!r} renamed {values_map[value]!r}; the old value is read until the next release")
    return out, notes


def identity_names(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` under the names and values that trial ids and stage keys were first hashed with (before
    ``RENAMED_KEYS``): a rename then changes no stored trial's or stage result's identity, so a store written
    before it resumes and reuses its teachers."""
    back = {**{new: old for old, new in RENAMED_KEYS.items()}, **_HASHED_AS}
    out = {back.get(k, k): v for k, v in values.items()}
    for key, values_map in RENAMED_VALUES.items():
        old_of = {new: old for old, new in values_map.items()}
        if isinstance(out.get(key), str) and out[key] in old_of:
            out[key] = old_of[out[key]]
    return out


# Which keys each method reads. A key outside its method's set changes nothing for that method, so giving it a
# value other than its default is refused (``refused_keys``): a setting that silently does nothing is worse than
# an error. Every config key is in exactly one group; the groups a method has follow from its declaration in
# ``trainable.catalog`` (``tests/test_config.py`` checks both against the schema and against what a run reads).
KEY_GROUPS: dict[str, tuple[str, ...]] = {
    # Every method: what is trained on what data, the labeled clips and the test, the step count, the hardware.
    "common": (
        "method", "primary_backbone", "scale", "dataset", "data_root", "synthetic_root", "split", "labeled_per_class",
        "labeled_fraction", "labeled_seed", "synthetic_classes", "synthetic_train_per_class", "synthetic_test_per_class",
        "synthetic_frames", "synthetic_size", "synthetic_distractors", "synthetic_noise", "synthetic_scene_bias",
        "synthetic_seed", "cache_decoded", "video_reader", "primary_frames", "primary_stride", "input_size", "resize_min", "resize_max",
        "test_clips", "test_crops", "batch_size", "mu", "batchnorm", "lr", "weight_decay", "warmup_epochs", "epochs",
        "steps_per_epoch", "grad_clip", "precision", "loader_workers", "pin_memory", "channels_last", "compile", "seed",
    ),
    # A second model (CMPL, ActNetFormer).
    "aux": ("aux_backbone", "aux_frames", "aux_stride", "temporal_aug", "aux_optimizer", "aux_lr", "aux_weight_decay"),
    # Pseudo-labels of unlabeled clips, from a weak view for a strong one (FixMatch, CMPL, ActNetFormer).
    "pseudo_labels": ("threshold", "gamma", "unsup_warmup_epochs", "spatial_aug"),
    # The strong augmentation (the pseudo-labelled view; TimeBalance's teacher pretraining).
    "strong_view": ("randaug_ops", "randaug_magnitude", "cutout"),
    # The contrastive term between the two models (ActNetFormer).
    "contrastive": ("beta", "temperature", "contrastive_symmetric", "projection_dim", "contrastive_negatives"),
    # The optimizer choice of the stepped methods (TimeBalance's is Adam, fixed by its paper).
    "stepped_optimizer": ("optimizer", "momentum"),
    # A pipeline's teachers and stages (TimeBalance).
    "stages": (
        "omega", "clips_per_video", "ssl_frames", "ssl_stride", "ssl_batch_size", "ssl_temperature", "pretrain_epochs",
        "finetune_epochs", "teacher_lr", "teacher_warmup_epochs", "student_init",
    ),
}  # fmt: skip


def method_groups(spec: catalog.MethodSpec) -> dict[str, str | None]:
    """Each key group, and None where ``spec`` reads it or why it does not."""
    return {
        "common": None,
        "aux": None if "aux" in spec.models else f"{spec.name} trains one model, no auxiliary",
        "pseudo_labels": None if spec.labelled_by else f"{spec.name} has no pseudo-labels of unlabeled clips",
        "strong_view": None if spec.labelled_by or spec.stages else f"{spec.name} has no strong augmentation, only the labeled clips' weak view",
        "contrastive": None if spec.contrastive else f"{spec.name} has no contrastive term",
        "stepped_optimizer": f"{spec.name} trains with Adam and its paper's schedule (lr, weight_decay, warmup_epochs apply)"
        if spec.stages else None,
        "stages": None if spec.stages else "only a pipeline method (timebalance) has teachers and stages",
    }  # fmt: skip


def refused_keys(method: str) -> dict[str, str]:
    """The keys method ``method`` does not read, each with why: given a value other than its default, refused."""
    groups = method_groups(catalog.METHODS[method])
    return {key: why for group, why in groups.items() if why is not None for key in KEY_GROUPS[group]}


def method_keys(method: str) -> frozenset[str]:
    """The keys method ``method`` reads (``KEY_GROUPS``)."""
    groups = method_groups(catalog.METHODS[method])
    return frozenset(key for group, why in groups.items() if why is None for key in KEY_GROUPS[group])


def _refused_values(method: str) -> dict[tuple[str, Any], str]:
    """Values of a read key that do nothing for ``method`` (the key's other values do something)."""
    spec = catalog.METHODS[method]
    if spec.stages:
        return {("batchnorm", "separate"): f"{method}'s student normalises its labeled and unlabeled clips as one batch; "
                                        f"allowed: joint (what it does), sync (statistics over every worker's clips)"}  # fmt: skip
    if not spec.labelled_by:
        return {("batchnorm", "joint"): f"{method} has only labeled clips, one batch either way; allowed: separate, sync"}
    return {}


# The method names as a Literal, so a wrong one is listed against every allowed one.
MethodName = Literal[tuple(catalog.METHODS)]  # type: ignore[valid-type]


class ConfigError(ValueError):
    """A config value that is not allowed; the message names the key."""


def refuse_booleans(model: type[BaseModel], values: Any) -> Any:
    """Refuse ``true``/``false`` for a key that is not a boolean: pydantic would take ``epochs: true`` as 1 (YAML
    and ``--set epochs=true`` read it as a boolean), and a run of one epoch is not what anybody asked for."""
    if isinstance(values, dict):
        for key, value in values.items():
            field = model.model_fields.get(key)
            if isinstance(value, bool) and field is not None and not _allows_bool(field.annotation):
                raise ValueError(f"{key}: a boolean where {_kind(field.annotation)} is expected (got {value!r})")
    return values


def _allows_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any:
        return True
    return any(_allows_bool(arg) for arg in getattr(annotation, "__args__", ()))


def _kind(annotation: Any) -> str:
    text = str(annotation)
    return "a number" if ("int" in text or "float" in text) else "text"


class TrainConfig(BaseModel):
    """Everything one training run needs. Defaults are the paper's where it gives them (docs/method.md §1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, values: Any) -> Any:
        """The values as given, checked against the method's keys, then with what ``scale`` and the method fill in;
        in that order, so that only what the user gave is refused and an explicit key wins over ``scale: tiny``."""
        if isinstance(values, dict):
            values, notes = renamed(values)
            for note in notes:
                warnings.warn(note, FutureWarning, stacklevel=2)
        values = refuse_booleans(cls, values)
        if not isinstance(values, dict):
            return values
        cls._refuse_unread(values)
        return cls._resolve_aux(cls._tiny_scale(values))

    # What is trained.
    method: MethodName = "actnetformer"
    primary_backbone: str = "resnet3d_50"
    aux_backbone: str | None = Field(
        None, description="None: the method's default; always None for methods without an auxiliary"
    )

    scale: Literal["full", "tiny"] = Field(
        "full", description="tiny: every backbone at CPU size, and TINY_INPUT's input settings for keys not given (toy runs)"
    )

    # Data.
    dataset: Literal["synthetic", "ucf101", "hmdb51", "kinetics400"] = "synthetic"
    data_root: str | None = Field(None, description="folder of a real dataset (not used by synthetic)")
    synthetic_root: str | None = Field(None, description="where the synthetic dataset is generated; None: a cache folder")
    split: int = Field(1, ge=1, le=3)
    labeled_per_class: int = Field(1, ge=1, description="k labeled videos per class (UCF-101 1 %: 1, 10 %: 10)")
    labeled_fraction: float | None = Field(
        None, gt=0.0, le=1.0, description="instead of labeled_per_class: this fraction of each class, at least 1"
    )
    labeled_seed: int | None = Field(None, description="seed of the labeled subset; None: the run's seed")
    synthetic_classes: int = Field(10, ge=2)
    synthetic_train_per_class: int = Field(60, ge=1)
    synthetic_test_per_class: int = Field(20, ge=1)
    synthetic_frames: int = Field(32, ge=2)
    synthetic_size: int = Field(32, ge=8)
    synthetic_distractors: int = Field(1, ge=0)
    synthetic_noise: float = Field(0.04, ge=0)
    synthetic_scene_bias: float = Field(
        0.0, ge=0.0, le=1.0, description="probability that a video's colours are its class's scene (appearance bias)"
    )
    synthetic_seed: int = 0
    cache_decoded: bool = Field(False, description="keep decoded videos in memory (small datasets)")
    video_reader: Literal["pyav", "torchcodec"] = Field(
        "pyav", description="the decoding library: PyAV (brings its own FFmpeg), or torchcodec (the .[torchcodec] extra, system FFmpeg)"
    )

    # Sampling and augmentation.
    primary_frames: int = Field(8, ge=1)
    primary_stride: int = Field(8, ge=1)
    aux_frames: int = Field(8, ge=1)
    aux_stride: int = Field(4, ge=1)
    input_size: int = Field(224, ge=8)
    resize_min: int = Field(256, ge=8, description="training clips: the short side is resized to a random size in [resize_min, resize_max], then cropped")
    resize_max: int = Field(320, ge=8)
    randaug_ops: int = Field(2, ge=0)
    randaug_magnitude: int = Field(9, ge=0, le=30)
    cutout: bool = True
    spatial_aug: bool = Field(True, description="off: the strong view is the weak one (no RandAugment, no cutout)")
    temporal_aug: bool = Field(
        True, description="off: the auxiliary samples the primary's clip at the primary's stride (one frame rate)"
    )
    test_clips: int = Field(5, ge=1, description="test: clips per video, their predictions averaged with every crop's")
    test_crops: int = Field(3, ge=1, description="test: spatial crops per clip")

    # The method's hyperparameters.
    batch_size: int = Field(1, ge=1, description="labeled clips per worker per step (B_l)")
    mu: int = Field(5, ge=1, description="unlabeled clips per labeled clip (B_u = mu * B_l)")
    threshold: float = Field(0.8, ge=0.0, le=1.0, description="pseudo-label confidence threshold tau")
    gamma: float = Field(2.0, ge=0.0, description="weight of the pseudo-label losses")
    beta: float = Field(2.0, ge=0.0, description="weight of the contrastive loss")
    temperature: float = Field(0.5, gt=0.0, description="contrastive temperature")
    contrastive_symmetric: bool = Field(False, description="also anchor the contrastive loss on the auxiliary")
    projection_dim: int = Field(512, ge=1)
    contrastive_negatives: Literal["local", "global"] = Field(
        "local", description="global: every worker's clips are negatives (gathered with gradients), not only its own"
    )
    batchnorm: Literal["separate", "joint", "sync"] = Field(
        "separate",
        description="separate: labeled and unlabeled clips normalised as two batches per worker; joint: one batch "
        "(FixMatch's code); sync: separate, with statistics over every worker's clips",
    )
    unsup_warmup_epochs: float = Field(
        0.0, ge=0.0, description="ramp gamma and beta linearly from 0 over this many epochs (0: off, the paper)"
    )

    # TimeBalance (method timebalance; trainable.timebalance). Its teachers have the primary's backbone (a
    # 3D-ResNet); the student is the primary, trained ``epochs`` epochs with Adam at ``lr`` after ``warmup_epochs``.
    omega: float = Field(1.0, ge=0.0, description="timebalance: weight of the distillation loss (Eq. 2; the paper gives no value)")
    clips_per_video: int = Field(4, ge=2, description="timebalance: n, consecutive clips per video (teacher pretraining, s)")
    ssl_frames: int = Field(16, ge=1, description="timebalance: frames of a teacher pretraining clip")
    ssl_stride: int = Field(2, ge=1, description="timebalance: frame step of a pretraining clip (the paper gives none)")
    ssl_batch_size: int = Field(8, ge=2, description="timebalance: videos per pretraining step, the negatives of L_I (the paper gives none)")
    ssl_temperature: float = Field(0.1, gt=0.0, description="timebalance: temperature of the teachers' contrastive losses")
    pretrain_epochs: int = Field(250, ge=1, description="timebalance: each teacher's self-supervised epochs (scale tiny: epochs)")
    finetune_epochs: int = Field(
        50, ge=1, description="timebalance: the teachers' epochs on the labeled set (the paper gives none; scale tiny: epochs)"
    )
    teacher_lr: float = Field(1e-3, gt=0.0, description="timebalance: the teachers' Adam learning rate")
    teacher_warmup_epochs: int = Field(10, ge=0, description="timebalance: the teachers' linear warm-up (scale tiny: 0)")
    student_init: Literal["distinctive", "scratch"] = Field(
        "distinctive", description="timebalance: the student starts from the distinctive teacher's pretrained weights, or random"
    )

    # Optimisation.
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD only")
    weight_decay: float = Field(1e-3, ge=0.0)
    aux_optimizer: Literal["sgd", "adamw"] | None = Field(
        None, description="the auxiliary's own optimizer; None: optimizer (the paper trains both with SGD)"
    )
    aux_lr: float | None = Field(None, gt=0.0, description="the auxiliary's learning rate; None: lr")
    aux_weight_decay: float | None = Field(None, ge=0.0, description="the auxiliary's weight decay; None: weight_decay")
    warmup_epochs: float = Field(0.0, ge=0.0, description="linear learning-rate warm-up before the cosine decay")
    epochs: int = Field(250, ge=1)
    steps_per_epoch: int | None = Field(
        None, ge=1, description="None: one pass over the unlabeled set (the same for every method)"
    )
    grad_clip: float | None = Field(40.0, gt=0.0)

    # Hardware.
    precision: Literal["fp32", "bf16"] = "fp32"
    loader_workers: int = Field(0, ge=0)
    pin_memory: bool = False
    channels_last: bool = Field(False, description="channels_last_3d memory format for the 3D CNNs")
    compile: bool = Field(False, description="torch.compile the backbones")

    seed: int = 0

    @classmethod
    def _refuse_unread(cls, values: dict[str, Any]) -> None:
        """Refuse a key given a value that changes nothing for the config's method: the key, the method and why.
        A key at its default is the same as a key not given (a base shared by several methods may hold it)."""
        method = values.get("method", cls.model_fields["method"].default)
        if method not in catalog.METHODS:
            return  # the field's own check lists the allowed methods
        refused, problems = refused_keys(method), []
        for key, value in values.items():
            field = cls.model_fields.get(key)
            if field is None:
                continue
            if key in refused and value != field.default:
                problems.append(f"{key}: method {method} does not use it ({refused[key]}); remove it or give its default {field.default!r}")
            elif (key, value) in _refused_values(method):
                problems.append(f"{key}: {value!r} does nothing for method {method} ({_refused_values(method)[key, value]})")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def tiny_fills(cls, values: dict[str, Any]) -> dict[str, Any]:
        """What ``scale: tiny`` fills in for ``values`` where they do not give the key themselves."""
        epochs = values.get("epochs", cls.model_fields["epochs"].default)
        return {**TINY_INPUT, "pretrain_epochs": epochs, "finetune_epochs": epochs, "teacher_warmup_epochs": 0}

    @classmethod
    def _tiny_scale(cls, values: dict[str, Any]) -> dict[str, Any]:
        # Toy scale fills in the input settings too: 224-pixel crops of a 32-pixel model make no sense.
        # Every stage of a pipeline method is as long as the trial's own training, so that ``--set epochs=N --set
        # steps_per_epoch=M`` makes each of them N x M steps. What the config gives itself is kept.
        return {**cls.tiny_fills(values), **values} if values.get("scale") == "tiny" else values

    @classmethod
    def _resolve_aux(cls, values: dict[str, Any]) -> dict[str, Any]:
        # A method without an auxiliary records none; one with an auxiliary gets its default (docs/method.md §1.4).
        method = catalog.METHODS.get(values.get("method", cls.model_fields["method"].default))
        if method is None:
            return values
        aux = (values.get("aux_backbone") or method.default_aux) if "aux" in method.models else None
        return {**values, "aux_backbone": aux}

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        allowed = sorted(catalog.BACKBONES)  # as trainable.models.available() lists them
        for key in ("primary_backbone", "aux_backbone"):
            name = getattr(self, key)
            if name is not None and name not in allowed:
                raise ValueError(f"{key}: unknown backbone {name!r}; allowed: {', '.join(allowed)}")
        if self.resize_min > self.resize_max:
            raise ValueError(f"resize_min: must be <= resize_max ({self.resize_max}), got {self.resize_min}")
        if self.resize_min < self.input_size:
            raise ValueError(f"resize_min: must be >= input_size ({self.input_size}), got {self.resize_min}")
        if self.uses_contrastive and self.batch_size * self.mu < 2:
            raise ValueError("mu: the contrastive loss needs batch_size * mu >= 2 unlabeled clips per worker")
        if "labeled_per_class" in self.model_fields_set and self.labeled_fraction is not None:
            raise ValueError("labeled_fraction: give labeled_per_class or labeled_fraction, not both")
        if self.dataset != "synthetic" and self.data_root is None:
            raise ValueError(f"data_root: required for dataset {self.dataset!r}")
        if catalog.METHODS[self.method].stages:
            if not self.primary_backbone.startswith("resnet3d"):
                raise ValueError(f"primary_backbone: {self.method} needs a 3D-ResNet (its teachers' unpooled loss reads every "
                                 f"frame), got {self.primary_backbone!r}")  # fmt: skip
            if self.ssl_frames % self.clips_per_video:
                raise ValueError(f"ssl_frames: the long clip's {self.ssl_frames} frames must split into clips_per_video "
                                 f"({self.clips_per_video}) equal parts")  # fmt: skip
        return self

    # Derived facts, so no caller re-derives them differently.
    @property
    def uses_contrastive(self) -> bool:
        """Projection heads exist and ``L_ca`` is computed only then (beta = 0 is the no-contrastive row)."""
        return catalog.METHODS[self.method].contrastive and self.beta > 0

    def optimizer_of(self, role: str) -> tuple[str, float, float]:
        """Optimizer kind, learning rate and weight decay of the model in ``role`` (``primary`` or ``aux``)."""
        if role != "aux":
            return self.optimizer, self.lr, self.weight_decay
        return (
            self.aux_optimizer or self.optimizer,
            self.lr if self.aux_lr is None else self.aux_lr,
            self.weight_decay if self.aux_weight_decay is None else self.aux_weight_decay,
        )

    @property
    def labeled_subset_seed(self) -> int:
        """The seed the labeled subset is drawn with: ``labeled_seed``, or the run's own seed where that is None."""
        return self.seed if self.labeled_seed is None else self.labeled_seed

    def synthetic_spec(self) -> SyntheticSpec:
        return SyntheticSpec(
            classes=self.synthetic_classes,
            train_per_class=self.synthetic_train_per_class,
            test_per_class=self.synthetic_test_per_class,
            frames=self.synthetic_frames,
            size=self.synthetic_size,
            noise=self.synthetic_noise,
            distractors=self.synthetic_distractors,
            scene_bias=self.synthetic_scene_bias,
            seed=self.synthetic_seed,
        )

    def check_paths(self) -> None:
        """Fail on a dataset folder that is not there; separate from parsing since it depends on the machine."""
        if self.dataset != "synthetic" and not self.data_root:
            raise ConfigError(f"data_root: dataset {self.dataset} needs the folder of its videos and lists (got {self.data_root!r})")
        if self.dataset != "synthetic" and not Path(str(self.data_root)).is_dir():
            raise ConfigError(f"data_root: dataset folder {self.data_root} does not exist")

    @classmethod
    def parse(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        """Validate ``values``; on failure raise ``ConfigError`` listing every bad key of ``source``."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, source)) from None


def format_errors(exc: ValidationError, source: str, model: type[BaseModel] = TrainConfig, prefix: str = "") -> str:
    """One line per problem: ``source: key.path: message (got value)``; unknown keys list the allowed ones."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key; allowed: " + ", ".join(_fields_at(model, loc[:-1]))
        got = "" if err["type"] in ("missing", "value_error") else f" (got {err['input']!r})"
        key = ".".join(filter(None, [prefix, *loc]))
        lines.append(f"{source}: {key + ': ' if key else ''}{message}{got}")
    return "\n".join(lines)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


def _fields_at(model: type[BaseModel], path: list[str]) -> list[str]:
    """Key names allowed in the nested model at ``path`` (path parts that are dict keys are skipped)."""
    for part in path:
        field = model.model_fields.get(part)
        if field is None:  # a dict key, such as a parameter name under ``space``
            continue
        inner = _models_in(field.annotation)
        if not inner:
            break
        model = inner[0]
    return [field.alias or name for name, field in model.model_fields.items()]


def _check_groups() -> None:
    """Every config key in exactly one of ``KEY_GROUPS``: a key added without saying which methods read it fails
    at import, not by being silently accepted for methods that ignore it."""
    grouped = [key for keys in KEY_GROUPS.values() for key in keys]
    fields = set(TrainConfig.model_fields)
    twice = sorted({k for k in grouped if grouped.count(k) > 1})
    if set(grouped) != fields or twice:
        raise ImportError(f"trainable.config.KEY_GROUPS: ungrouped {sorted(fields - set(grouped))}, unknown "
                          f"{sorted(set(grouped) - fields)}, twice {twice}")  # fmt: skip


_check_groups()
