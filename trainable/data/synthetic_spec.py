"""What determines a synthetic dataset, apart from the code that renders it.

Kept out of ``trainable.data.synthetic`` (numpy, PyAV) so that the training config, which builds a
``SyntheticSpec``, imports with the standard library alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

# Bumped when the rendering changes, so a cached dataset of an older rendering is not reused.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines the generated files; its hash names the default cache folder."""

    classes: int = 10
    train_per_class: int = 60
    test_per_class: int = 20
    frames: int = 32
    size: int = 32
    fps: int = 16
    noise: float = 0.04
    distractors: int = 1
    # Probability that a video takes its class's scene (background colour and object hue) instead of a
    # random one. 0: appearance says nothing about the class; 1: appearance alone tells the class.
    scene_bias: float = 0.0
    seed: int = 0

    def meta(self) -> dict[str, Any]:
        """The spec and the format version: what a generated folder records, and what its hash covers."""
        return {"version": FORMAT_VERSION, **asdict(self)}

    def key(self) -> str:
        """A short hash of ``meta()``: one cache folder per distinct dataset."""
        return hashlib.sha256(json.dumps(self.meta(), sort_keys=True).encode()).hexdigest()[:12]
