"""Supervised only: the primary on the labeled clips (the paper's Table S1 rows)."""

from trainable import catalog
from trainable.methods.base import Method


class Supervised(Method, spec=catalog.SUPERVISED):
    pass
