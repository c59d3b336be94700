"""What a method is: which models it trains, who pseudo-labels whom, and whether models are contrasted.

Every method's step runs the same forward pass and composes its losses from the same pieces in
``trainable.losses``; a method's structure (docs/method.md §1.4: the rows of the paper's Table 1) is declared in
``trainable.catalog``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import nn

from trainable import losses
from trainable.catalog import MethodSpec

@dataclass(frozen=True)
class Weights:
    """The loss weights of one step (gamma and beta may be ramped up by the loop)."""

    threshold: float
    gamma: float
    beta: float
    temperature: float
    symmetric: bool = False


@dataclass
class StepLosses:
    """The step's total loss and its parts; ``None`` where the method has no such term."""

    loss: torch.Tensor
    loss_sup: torch.Tensor
    loss_pl: torch.Tensor | None = None
    loss_ca: torch.Tensor | None = None
    # Per student model: which unlabeled clips passed the threshold, and the pseudo-labels it was given.
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    pseudo_labels: dict[str, torch.Tensor] = field(default_factory=dict)


class Net(nn.Module):
    """A backbone and, for contrastive methods, its projection head: one module, so DDP wraps both."""

    def __init__(self, backbone: nn.Module, projection: nn.Module | None = None, channels_last: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection = projection
        # channels_last_3d: the layout GPU kernels for 3D convolutions prefer; weights and inputs both.
        self.memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        if channels_last:
            self.backbone.to(memory_format=self.memory_format)

    def forward(self, x: torch.Tensor, project: slice | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits of every clip, and, when a head exists, projections of the clips ``project`` selects (the
        contrastive loss compares only the weak views, so the other clips are not projected)."""
        features = self.backbone.forward_features(x.contiguous(memory_format=self.memory_format))
        logits = self.backbone.forward_head(features)
        if self.projection is None or project is None:
            return logits, None
        return logits, self.projection(features[project])


class Method:
    """Base of every method; a subclass names its declaration, ``class CMPL(Method, spec=catalog.CMPL)``.

    The structure lives in ``trainable.catalog`` so that validating a config needs no torch; it is copied
    onto the class here (``name``, ``models``, ``labelled_by``, ``contrastive``, ``default_aux``, see
    ``MethodSpec``) so the step reads it as plain attributes and nothing is declared twice.
    """

    spec: ClassVar[MethodSpec]
    name: ClassVar[str]
    models: ClassVar[tuple[str, ...]]
    labelled_by: ClassVar[Mapping[str, str]]
    contrastive: ClassVar[bool]
    default_aux: ClassVar[str | None]

    def __init_subclass__(cls, spec: MethodSpec | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if spec is not None:  # without one, a subclass keeps its parent's
            cls.spec = spec
            for f in fields(spec):
                setattr(cls, f.name, getattr(spec, f.name))

    @property
    def uses_unlabeled(self) -> bool:
        return bool(self.labelled_by)

    def forward(
        self,
        nets: dict[str, nn.Module],
        labeled: dict[str, torch.Tensor],
        unlabeled: dict[str, torch.Tensor] | None,
        joint_batchnorm: bool = False,
    ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """Logits by model and view, and the projections of the weak views by model (contrastive only).

        Batch norm normalises the labeled clips as one batch and the unlabeled ones (weak and strong
        together) as another, so the few labeled clips keep statistics of their own. ``joint_batchnorm``
        (config ``batchnorm: joint``) passes all three views as one batch instead, as FixMatch's reference
        code does; on an earlier synthetic benchmark FixMatch then reached 86.0 % top-1 instead of 99.5 %
        (seed 0; README, "Method defaults and choices").
        """
        logits: dict[str, dict[str, torch.Tensor]] = {}
        projections: dict[str, torch.Tensor] = {}
        for model in self.models:
            views = {"labeled": labeled[f"{model}_labeled"]}
            if unlabeled is not None:
                views.update(weak=unlabeled[f"{model}_weak"], strong=unlabeled[f"{model}_strong"])
            names = list(views)
            batches = [names] if joint_batchnorm or len(names) == 1 else [names[:1], names[1:]]
            logits[model] = {}
            for batch in batches:
                sizes = [views[v].shape[0] for v in batch]
                weak = None
                if "weak" in batch and self.contrastive:
                    start = sum(sizes[: batch.index("weak")])
                    weak = slice(start, start + views["weak"].shape[0])
                out, projected = nets[model](torch.cat([views[v] for v in batch]), project=weak)
                logits[model].update(zip(batch, out.split(sizes)))
                if projected is not None:
                    projections[model] = projected
        return logits, projections

    def losses(
        self,
        logits: dict[str, dict[str, torch.Tensor]],
        projections: dict[str, torch.Tensor],
        labels: torch.Tensor,
        weights: Weights,
        gather: Callable[[torch.Tensor], tuple[torch.Tensor, int]] | None = None,
    ) -> StepLosses:
        """Total loss ``sum L_s + gamma * sum L_u + beta * L_ca`` (Eq. 7) and its parts.

        ``gather`` (``parallel.gather_rows``) makes the contrastive negatives those of every worker's batch.
        """
        loss_sup = sum(losses.supervised_loss(logits[m]["labeled"], labels) for m in self.models)
        step = StepLosses(loss=loss_sup, loss_sup=loss_sup)
        if self.labelled_by:
            terms = []
            for student, labeller in self.labelled_by.items():
                term, mask = losses.cross_pseudo_label_loss(
                    logits[student]["strong"], logits[labeller]["weak"], weights.threshold
                )
                terms.append(term)
                step.masks[student] = mask
                step.pseudo_labels[student] = logits[labeller]["weak"].detach().argmax(dim=-1)
            step.loss_pl = sum(terms)
            step.loss = step.loss + weights.gamma * step.loss_pl
        if self.contrastive and projections:
            contrast = losses.symmetric_contrastive_loss if weights.symmetric else losses.contrastive_loss
            z_primary, z_aux = projections["primary"], projections["aux"]
            everyone = None
            if gather is not None:  # in float32, as every loss is computed
                (all_primary, offset), (all_aux, _) = gather(z_primary.float()), gather(z_aux.float())
                everyone = losses.GlobalBatch(all_primary, all_aux, offset)
            step.loss_ca = contrast(z_primary, z_aux, weights.temperature, everyone)
            step.loss = step.loss + weights.beta * step.loss_ca
        return step
