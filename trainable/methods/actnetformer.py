"""ActNetFormer: cross-architecture pseudo-labels (Eq. 4–5) plus the contrastive loss (Eq. 6), weighted by beta.

The pseudo-labelling is CMPL's structure; what differs is the pairing (a CNN and a transformer, chosen in
the config) and the contrastive term. With beta = 0 it is the paper's "without contrastive" row.
"""

from trainable import catalog
from trainable.methods.cmpl import CMPL


class ActNetFormer(CMPL, spec=catalog.ACTNETFORMER):
    pass
