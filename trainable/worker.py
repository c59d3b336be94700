"""What each Ray Train worker runs, in a module that imports nothing heavy.

A trial's driver and its Train controller only hand this function on (pickled by reference, so unpickling
imports its module). Kept apart from ``trainable.loop``, neither process imports torchvision, the models
and the video decoder just for that: seconds of every trial's start on a small machine.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

# Keys of the ``train_loop_config`` that are not training config: the trial's ledger writer
# (``results.ledger.EpochWriter``) and when the trial's driver called ``fit`` (wall clock, seconds).
WRITER_KEY = "_epoch_writer"
FIT_STARTED_KEY = "_fit_started_at"


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point of a trial's Train run (``search.backend.trial_trainer``)."""
    entered = time.time()
    import ray.train

    from trainable import logs, loop, stages
    from trainable.config import TrainConfig
    from trainable.session import RaySession

    context = ray.train.get_context()
    # The run's name carries the trial's id: the job's log interleaves the workers of concurrent trials, and a
    # worker's own log (the dashboard's Actors page) should say which trial it belongs to.
    logs.setup(tag=context.get_experiment_name())
    config = dict(config)
    writer = config.pop(WRITER_KEY, None)
    fit_started = config.pop(FIT_STARTED_KEY, None)
    # From ``fit`` to here: the Train controller's and this worker's processes starting, the process group.
    startup = entered - fit_started if fit_started is not None else float("nan")
    log.info("worker %d of %d started %.1f s after fit", context.get_world_rank(), context.get_world_size(), startup)
    try:
        loop.run(TrainConfig.parse(config), RaySession(writer, started=entered, startup_s=startup))
    finally:
        stages.remove_copies()  # Ray ends this process without exit handlers: nothing downloaded stays on the node


def warm_up() -> None:
    """Start importing what ``train_loop_per_worker`` needs, in a thread of this Train worker, and return at once.

    Run by the trial's Train controller on every worker before it sets up the process group
    (``search.backend.TrialTorchBackend``): the imports (torchvision, timm, pytorchvideo, and ``torch._dynamo``, which
    the first optimizer built imports, torch's ``_disable_dynamo``) then overlap with what Ray still does before it
    calls the train function, instead of following it. The train function's own imports wait for any this thread
    has begun (Python's import lock) and redo any that failed, so a failure here is reported there.
    """
    threading.Thread(target=_import_loop, name="warm-up", daemon=True).start()


def _import_loop() -> None:
    try:
        import torch._dynamo  # noqa: F401

        from trainable import loop  # noqa: F401
    except Exception:  # the train function imports the same and raises what failed
        log.debug("warm-up import failed", exc_info=True)
