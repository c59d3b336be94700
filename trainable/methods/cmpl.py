"""CMPL (Xu et al., 2022): two models of one family pseudo-label each other; no contrastive term."""

from trainable.methods.base import Method


class CMPL(Method):
    name = "cmpl"
    models = ("primary", "aux")
    teachers = {"primary": "aux", "aux": "primary"}
    default_aux = "resnet3d_18"
