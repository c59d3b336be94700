"""Methods by name; each declares its structure, ``base.Method`` composes the step."""

from trainable.methods.actnetformer import ActNetFormer
from trainable.methods.base import Method, Net, StepLosses, Weights
from trainable.methods.cmpl import CMPL
from trainable.methods.fixmatch import FixMatch
from trainable.methods.supervised import Supervised

METHODS: dict[str, type[Method]] = {m.name: m for m in (Supervised, FixMatch, CMPL, ActNetFormer)}


def get(name: str) -> Method:
    try:
        return METHODS[name]()
    except KeyError:
        raise ValueError(f"unknown method {name!r}; allowed: {', '.join(METHODS)}") from None


__all__ = ["METHODS", "Method", "Net", "StepLosses", "Weights", "get"]
