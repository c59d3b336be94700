"""FixMatch (Sohn et al., 2020) for video: the primary pseudo-labels its own strong view from its weak view (Eq. 1)."""

from trainable import catalog
from trainable.methods.base import Method


class FixMatch(Method, spec=catalog.FIXMATCH):
    pass
