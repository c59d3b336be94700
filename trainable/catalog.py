"""What a config can name, the backbones and the methods, declared without torch.

Validating a config (``python -m search check``) needs only these facts, and importing the models or the
methods to learn them would import torch (seconds). This module is their one source: the registry in
``trainable.models`` refuses a backbone not declared here and checks that every declared one is built,
and each ``trainable.methods`` class takes its structure from its ``MethodSpec`` here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

# Backbones that ``trainable.models.build`` accepts; each has a builder registered under the same name.
BACKBONES: tuple[str, ...] = (
    "resnet3d_50", "resnet3d_18", "resnet3d_tiny",
    "timesformer_s", "timesformer_b", "timesformer_tiny",
)  # fmt: skip


@dataclass(frozen=True)
class MethodSpec:
    """A method's structure (docs/method.md §1.4: a row of the paper's Table 1); ``trainable.methods`` composes its step."""

    name: str
    # Models trained, "primary" first; only the primary is used at test time.
    models: tuple[str, ...] = ("primary",)
    # model -> the model whose weak-view predictions pseudo-label its strong view (itself, for FixMatch). Not
    # called teachers: TimeBalance's teachers are networks of their own (``trainable.timebalance.Teacher``).
    labelled_by: Mapping[str, str] = field(default_factory=dict)
    # Projection heads and the contrastive loss between the primary and the auxiliary.
    contrastive: bool = False
    # The auxiliary backbone when the config names none; None exactly when there is no auxiliary.
    default_aux: str | None = None
    # A pipeline method's stages in order: all but the last build results that trials share (teachers, stored
    # once per key by ``trainable.stages``), the last is the trial's own training. Empty: one loop, one stage.
    stages: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A declaration that could never build fails at import, not in the middle of a search.
        if ("aux" in self.models) != (self.default_aux is not None):
            raise ValueError(f"method {self.name!r}: default_aux must be given exactly when 'aux' is trained")
        if self.default_aux is not None and self.default_aux not in BACKBONES:
            raise ValueError(f"method {self.name!r}: default_aux {self.default_aux!r} is not in BACKBONES")
        if self.contrastive and "aux" not in self.models:
            raise ValueError(f"method {self.name!r}: the contrastive loss needs an auxiliary")
        if self.stages and (self.labelled_by or self.contrastive):
            raise ValueError(f"method {self.name!r}: a pipeline method trains in its own module, not the shared step")


SUPERVISED = MethodSpec("supervised")
FIXMATCH = MethodSpec("fixmatch", labelled_by={"primary": "primary"})
CMPL = MethodSpec(
    "cmpl", models=("primary", "aux"), labelled_by={"primary": "aux", "aux": "primary"}, default_aux="resnet3d_18"
)
# CMPL's pseudo-labelling with a CNN/transformer pair and the contrastive term.
ACTNETFORMER = replace(CMPL, name="actnetformer", contrastive=True, default_aux="timesformer_s")

# TimeBalance (CVPR 2023): a student distilled from two self-supervised teachers (``trainable.timebalance``).
TIMEBALANCE = MethodSpec(
    "timebalance", stages=("pretrain_invariant", "pretrain_distinctive", "finetune_teachers", "student")
)

# By name, in the paper's Table 1 order (the order error messages list them in).
METHODS: dict[str, MethodSpec] = {m.name: m for m in (SUPERVISED, FIXMATCH, CMPL, ACTNETFORMER, TIMEBALANCE)}
