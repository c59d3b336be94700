"""Methods by name; each is declared in ``trainable.catalog``, ``base.Method`` composes the step."""

from trainable import catalog
from trainable.methods.actnetformer import ActNetFormer
from trainable.methods.base import Method, Net, StepLosses, Weights
from trainable.methods.cmpl import CMPL
from trainable.methods.fixmatch import FixMatch
from trainable.methods.supervised import Supervised

METHODS: dict[str, type[Method]] = {m.name: m for m in (Supervised, FixMatch, CMPL, ActNetFormer)}
# A method the config accepts but no class implements would fail only when a trial starts. Pipeline methods
# (declared with stages) have a trainer of their own (``trainable.loop.PIPELINES``), not this step.
STEPPED = [name for name, spec in catalog.METHODS.items() if not spec.stages]
if list(METHODS) != STEPPED:
    raise ImportError(f"trainable.methods implements {list(METHODS)} but trainable.catalog declares {STEPPED}")


def get(name: str) -> Method:
    """A fresh instance of method ``name``; the error lists the allowed names."""
    try:
        return METHODS[name]()
    except KeyError:
        raise ValueError(f"no shared training step for method {name!r}; methods with one: {', '.join(METHODS)}") from None


__all__ = ["METHODS", "Method", "Net", "StepLosses", "Weights", "get"]
