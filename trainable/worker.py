"""What each Ray Train worker runs, in a module that imports nothing heavy.

A trial's driver and its Train controller only hand this function on (pickled by reference, so unpickling
imports its module). Kept apart from ``trainable.loop``, neither process imports torchvision, the models
and the video decoder just for that: seconds of every trial's start on a small machine.
"""

from __future__ import annotations

import time
from typing import Any

# Keys of the ``train_loop_config`` that are not training config: the trial's ledger writer
# (``results.ledger.EpochWriter``) and when the trial's driver called ``fit`` (wall clock, seconds).
WRITER_KEY = "_epoch_writer"
FIT_STARTED_KEY = "_fit_started_at"


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point for ``ray.train.torch.TorchTrainer(train_loop_per_worker=...)``."""
    entered = time.time()
    from trainable import logs, loop
    from trainable.config import TrainConfig
    from trainable.session import RaySession

    logs.setup()
    config = dict(config)
    writer = config.pop(WRITER_KEY, None)
    fit_started = config.pop(FIT_STARTED_KEY, None)
    # From ``fit`` to here: the Train controller's and this worker's processes starting, the process group.
    startup = entered - fit_started if fit_started is not None else float("nan")
    loop.run(TrainConfig.parse(config), RaySession(writer, started=entered, startup_s=startup))
