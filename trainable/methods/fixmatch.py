"""FixMatch (Sohn et al., 2020) for video: the primary pseudo-labels its own strong view from its weak view (Eq. 1)."""

from trainable.methods.base import Method


class FixMatch(Method):
    name = "fixmatch"
    teachers = {"primary": "primary"}
