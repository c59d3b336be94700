"""CMPL (Xu et al., 2022): two models of one family pseudo-label each other; no contrastive term."""

from trainable import catalog
from trainable.methods.base import Method


class CMPL(Method, spec=catalog.CMPL):
    pass
