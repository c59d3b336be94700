"""An action dataset whose classes are motions, generated on demand in the UCF-101 layout.

Appearance (shape, colour, size, position, background, a drifting distractor) is random in every video
unless ``scene_bias`` ties it to the class: then with that probability a video is filmed in its class's
"scene" (the class's background colour and object hue), as real action datasets film a class in its
typical place. Only the motion always tells the class, so a model has to use time. Two pairs of classes differ only in
the direction of time (``MoveUp``/``MoveDown``, ``Grow``/``Shrink``), so even frame order matters. No class
is the mirror image of another (``MoveSideways`` and ``Circle`` go either way), so a horizontal flip never
changes a clip's class. Every video is drawn from its own seed, so the dataset is the same on every
machine that generates it, and a Ray node can make its own copy instead of receiving one.
"""

from __future__ import annotations

import colorsys
import fcntl
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import av
import numpy as np
from tqdm import tqdm

from trainable.data.synthetic_spec import FORMAT_VERSION, SyntheticSpec  # noqa: F401  (public here too)

META = "synthetic.json"


# A motion maps normalised time t in [0, 1] (one entry per frame) to centre x, y (fractions of the frame),
# a radius factor and visibility.
Track = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
Motion = Callable[[np.ndarray, np.random.Generator, int], Track]


def _still_at(t: np.ndarray, x: float, y: float) -> Track:
    return np.full_like(t, x), np.full_like(t, y), np.ones_like(t), np.ones_like(t, dtype=bool)


def _linear(t: np.ndarray, rng: np.random.Generator, axis: int, sign: float) -> Track:
    travel = rng.uniform(0.35, 0.55)
    start = 0.5 - sign * travel / 2 + rng.uniform(-0.08, 0.08)
    along = start + sign * travel * t
    across = np.full_like(t, rng.uniform(0.2, 0.8))
    x, y = (along, across) if axis == 0 else (across, along)
    return x, y, np.ones_like(t), np.ones_like(t, dtype=bool)


def _wave(t: np.ndarray, rng: np.random.Generator, frames: int, axis: int) -> Track:
    period = rng.uniform(10, 20) / frames
    offset = 0.5 + rng.uniform(-0.1, 0.1) + rng.uniform(0.15, 0.25) * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    across = np.full_like(t, rng.uniform(0.25, 0.75))
    x, y = (offset, across) if axis == 0 else (across, offset)
    return x, y, np.ones_like(t), np.ones_like(t, dtype=bool)


def _circle(t: np.ndarray, rng: np.random.Generator, frames: int) -> Track:
    turns = rng.uniform(1.0, 1.5) * rng.choice([-1, 1])
    angle = rng.uniform(0, 2 * np.pi) + 2 * np.pi * turns * t
    radius = rng.uniform(0.15, 0.25)
    cx, cy = rng.uniform(0.4, 0.6, size=2)
    return cx + radius * np.cos(angle), cy + radius * np.sin(angle), np.ones_like(t), np.ones_like(t, dtype=bool)


def _scale(t: np.ndarray, rng: np.random.Generator, grow: bool) -> Track:
    x, y, _, visible = _still_at(t, *rng.uniform(0.3, 0.7, size=2))
    factor = 0.6 + 1.0 * (t if grow else 1 - t)
    return x, y, factor, visible


def _blink(t: np.ndarray, rng: np.random.Generator, frames: int) -> Track:
    x, y, r, _ = _still_at(t, *rng.uniform(0.25, 0.75, size=2))
    half = rng.integers(4, 8)
    frame = np.round(t * (frames - 1)).astype(int) + rng.integers(0, 2 * half)
    return x, y, r, (frame // half) % 2 == 0


def _phases(t: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Progress through a first and a second sub-motion, each 0 → 1, switching near the middle of the video."""
    switch = rng.uniform(0.4, 0.6)
    return np.clip(t / switch, 0.0, 1.0), np.clip((t - switch) / (1.0 - switch), 0.0, 1.0)


def _up_then_sideways(t: np.ndarray, rng: np.random.Generator) -> Track:
    """Two sub-motions: up, then left or right (either way: a flip must not change the class)."""
    first, second = _phases(t, rng)
    travel, sign = rng.uniform(0.3, 0.4), float(rng.choice([-1.0, 1.0]))
    x = 0.5 - sign * travel / 2 + rng.uniform(-0.05, 0.05) + sign * travel * second
    y = 0.5 + travel / 2 + rng.uniform(-0.05, 0.05) - travel * first
    return x, y, np.ones_like(t), np.ones_like(t, dtype=bool)


def _grow_then_fall(t: np.ndarray, rng: np.random.Generator) -> Track:
    """Two sub-motions: grow in place, then move down at the grown size."""
    first, second = _phases(t, rng)
    travel = rng.uniform(0.3, 0.4)
    x = np.full_like(t, rng.uniform(0.3, 0.7))
    y = 0.5 - travel / 2 + rng.uniform(-0.05, 0.05) + travel * second
    return x, y, 0.6 + 0.8 * first, np.ones_like(t, dtype=bool)


# Classes in order: a dataset of k classes takes the first k (default 10). The last two are made of two
# sub-motions (TimeBalance's temporally-distinctive kind, its JavelinThrow), where most others repeat or
# continue one motion (its Fencing); appended so that the default 10-class set stays byte-identical.
MOTIONS: dict[str, Motion] = {
    "MoveUp": lambda t, rng, n: _linear(t, rng, axis=1, sign=-1.0),
    "MoveDown": lambda t, rng, n: _linear(t, rng, axis=1, sign=1.0),
    "MoveSideways": lambda t, rng, n: _linear(t, rng, axis=0, sign=float(rng.choice([-1.0, 1.0]))),
    "Circle": _circle,
    "Grow": lambda t, rng, n: _scale(t, rng, grow=True),
    "Shrink": lambda t, rng, n: _scale(t, rng, grow=False),
    "Blink": _blink,
    "WaveHorizontal": lambda t, rng, n: _wave(t, rng, n, axis=0),
    "WaveVertical": lambda t, rng, n: _wave(t, rng, n, axis=1),
    "Still": lambda t, rng, n: _still_at(t, *rng.uniform(0.25, 0.75, size=2)),
    "UpThenSideways": lambda t, rng, n: _up_then_sideways(t, rng),
    "GrowThenFall": lambda t, rng, n: _grow_then_fall(t, rng),
}
# What each class's clips have in common over time, for reading TimeBalance's temporal similarity s per class:
# a periodic motion's clips look alike wherever they are cut (high s expected), a two-part motion's do not.
MOTION_KINDS: dict[str, str] = {
    "MoveUp": "one motion", "MoveDown": "one motion", "MoveSideways": "one motion", "Grow": "one motion",
    "Shrink": "one motion", "Circle": "periodic", "Blink": "periodic", "WaveHorizontal": "periodic",
    "WaveVertical": "periodic", "Still": "still", "UpThenSideways": "two sub-motions", "GrowThenFall": "two sub-motions",
}  # fmt: skip


def _colour(rng: np.random.Generator, hue: float | None = None) -> np.ndarray:
    """A saturated, bright colour; of a random hue unless ``hue`` is given."""
    hue = rng.uniform() if hue is None else hue
    return np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 1.0), rng.uniform(0.7, 1.0)))


def _paint(canvas: np.ndarray, x: float, y: float, radius: float, colour: np.ndarray, square: bool) -> None:
    size = canvas.shape[0]
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    dx, dy = np.abs(xx - x * size), np.abs(yy - y * size)
    dist = np.maximum(dx, dy) if square else np.hypot(dx, dy)
    alpha = np.clip(radius - dist + 0.5, 0.0, 1.0)[..., None]  # one pixel of anti-aliasing
    canvas *= 1 - alpha
    canvas += alpha * colour


@dataclass(frozen=True)
class Scene:
    """A class's typical look: a background colour and an object hue, varied a little per video."""

    background: np.ndarray
    hue: float

    def look(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Object colour and background of one video filmed in this scene."""
        colour = _colour(rng, (self.hue + rng.normal(0.0, 0.02)) % 1.0)
        return colour, np.clip(self.background + rng.uniform(-0.02, 0.02, size=3), 0.0, 1.0)


def scenes(spec: SyntheticSpec) -> list[Scene]:
    """One scene per class: hues evenly spread round the colour wheel (so no two classes share one),
    backgrounds drawn from the dataset seed."""
    rng = np.random.default_rng([spec.seed, 2])
    return [Scene(rng.uniform(0.0, 0.25, size=3), c / spec.classes) for c in range(spec.classes)]


def render(
    motion: str, rng: np.random.Generator, spec: SyntheticSpec, look: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """Frames ``(frames, size, size, 3)`` uint8 of one video of class ``motion``.

    ``look`` (object colour, background; a ``Scene.look``) replaces the random colours. ``rng`` makes
    the same draws either way, so a video in its scene differs from its unbiased self only in colour.
    """
    n, size = spec.frames, spec.size
    t = np.linspace(0.0, 1.0, n)
    x, y, factor, visible = MOTIONS[motion](t, rng, n)
    radius = rng.uniform(0.09, 0.15) * size
    colour, square = _colour(rng), bool(rng.integers(2))
    background = rng.uniform(0.0, 0.25, size=3)
    if look is not None:
        colour, background = look
    distractors = [
        (rng.uniform(0.15, 0.85, size=2), rng.normal(0, 0.004, size=(n, 2)).cumsum(0), rng.uniform(0.05, 0.09) * size, _colour(rng) * 0.6)
        for _ in range(spec.distractors)
    ]
    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        canvas = np.broadcast_to(background, (size, size, 3)).copy()
        for start, walk, d_radius, d_colour in distractors:
            _paint(canvas, *(start + walk[i]), d_radius, d_colour, square=False)
        if visible[i]:
            _paint(canvas, x[i], y[i], radius * factor[i], colour, square)
        canvas += rng.normal(0.0, spec.noise, size=canvas.shape)
        frames[i] = np.clip(canvas * 255 + 0.5, 0, 255).astype(np.uint8)
    return frames


def encode(path: Path, frames: np.ndarray, fps: int) -> None:
    """Write frames as MPEG-4 part 2 in AVI, UCF-101's own container and codec family."""
    with av.open(str(path), mode="w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 4_000_000
        stream.thread_count = 1
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def _write(root: Path, spec: SyntheticSpec, progress: bool) -> None:
    classes = list(MOTIONS)[: spec.classes]
    jobs = [
        (split, c, i)
        for split, count in (("train", spec.train_per_class), ("test", spec.test_per_class))
        for c in range(len(classes))
        for i in range(count)
    ]
    lists: dict[str, list[str]] = {"train": [], "test": []}
    looks = scenes(spec)
    for split, c, i in tqdm(jobs, desc="synthetic dataset", disable=not progress, unit="video"):
        name = classes[c]
        group = i // 5 + (1 if split == "train" else 1 + -(-spec.train_per_class // 5))
        rel = f"{name}/v_{name}_g{group:02d}_c{i % 5 + 1:02d}.avi"
        stream = 0 if split == "train" else 1
        rng = np.random.default_rng([spec.seed, stream, c, i])
        # Its own stream decides the scene, so videos are the same at every bias except for their colours.
        scene_rng = np.random.default_rng([spec.seed, 3, stream, c, i])
        look = looks[c].look(scene_rng) if scene_rng.uniform() < spec.scene_bias else None
        (root / name).mkdir(exist_ok=True)
        encode(root / rel, render(name, rng, spec, look), spec.fps)
        lists[split].append(f"{rel} {c + 1}" if split == "train" else rel)
    # CRLF endings, as in the official UCF-101 lists.
    (root / "classInd.txt").write_bytes("".join(f"{i + 1} {n}\r\n" for i, n in enumerate(classes)).encode())
    (root / "trainlist01.txt").write_bytes("".join(f"{line}\r\n" for line in lists["train"]).encode())
    (root / "testlist01.txt").write_bytes("".join(f"{line}\r\n" for line in lists["test"]).encode())
    (root / META).write_text(json.dumps(spec.meta(), indent=2))


def default_root(spec: SyntheticSpec) -> Path:
    """Where a dataset is cached when no folder is given: one folder per distinct spec."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "actnet-search" / "synthetic"
    return base / spec.key()


def ensure_synthetic(spec: SyntheticSpec, root: str | os.PathLike[str] | None = None, progress: bool = True) -> Path:
    """Generate the dataset into ``root`` unless it is already there; safe when many processes call it.

    Generation goes to a temporary folder renamed into place, so a crash never leaves half a dataset.
    A folder holding a dataset of another spec is an error rather than silently replaced.
    """
    if spec.classes > len(MOTIONS) or spec.classes < 2:
        raise ValueError(f"synthetic_classes must be between 2 and {len(MOTIONS)}, got {spec.classes}")
    if not 0.0 <= spec.scene_bias <= 1.0:
        raise ValueError(f"synthetic_scene_bias must be between 0 and 1, got {spec.scene_bias}")
    root = Path(root) if root is not None else default_root(spec)
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        meta = root / META
        if meta.exists():
            found = json.loads(meta.read_text())
            wanted = spec.meta()
            if found != wanted:
                diff = {k: (found.get(k), v) for k, v in wanted.items() if found.get(k) != v}
                raise ValueError(f"{root} holds a synthetic dataset of another spec (found, wanted): {diff}")
            return root
        if root.exists() and any(root.iterdir()):
            raise ValueError(f"{root} exists, is not empty and holds no synthetic dataset")
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _write(tmp, spec, progress)
        if root.exists():
            root.rmdir()
        os.replace(tmp, root)
    return root
