"""One trial of a search: the Tune function that fits a Ray Train ``TorchTrainer`` on the trial's config.

Apart from ``search.tune`` so that a trial's process imports only what a trial needs (not Optuna, the space
parser, the loop's models): every trial is a new process. (Tune's ``reuse_actors`` would keep it, but a trial
ASHA stops keeps training in the kept process, since stopping does not end a running ``fit``, and the next
trial given that process errors.)
"""

from __future__ import annotations

import time
from typing import Any

import ray.train
from ray import tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from results.ledger import EpochWriter
from results.store import Store
from search.resume import Pins
from trainable.worker import FIT_STARTED_KEY, WRITER_KEY, train_loop_per_worker


def run_trial(
    config: dict[str, Any], train_storage: str, workers: int, cpus: float, gpus: float, store: Store, search_id: str, pins: Pins
) -> None:
    """One Tune trial: fit a ``TorchTrainer`` on this trial's config; its epochs go to the ledger, then to Tune.

    The Train run is named after the trial's ledger id, so a retried trial, or a trial of a resumed search,
    finds its earlier run's checkpoint and continues from it.
    """
    trial_id = pins.trial_id(config, tune.get_context().get_trial_id())
    writer = EpochWriter(store, search_id, trial_id, config.get("seed"))
    resources = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={**config, WRITER_KEY: writer, FIT_STARTED_KEY: time.time()},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=f"train-{trial_id}",
            storage_path=train_storage,
            callbacks=[LedgerReport(writer)],
            # Tune retries a failed trial (max_failures of the space). A worker group waiting for resources
            # keeps waiting (Train's default): on a cluster that is the autoscaler at work, and a local
            # instance never starts more trials than fit (search.runner).
            failure_config=ray.train.FailureConfig(max_failures=0),
        ),
    )
    trainer.fit()


class LedgerReport(TuneReportCallback):
    """Appends each epoch's row to the ledger once its checkpoint is stored, then hands the epoch to Tune.

    Every epoch the loop trains ends in a report with a checkpoint; the one report without (a run restored
    after its last epoch) repeats a row that ``RaySession.restore`` has appended again already.
    """

    def __init__(self, writer: EpochWriter) -> None:
        super().__init__()
        self.writer = writer

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if checkpoint is not None:  # a report without one repeats a restored epoch, whose row is written already
            self.writer.write(metrics[0], checkpoint.path)
        super().after_report(run_context, metrics, checkpoint)
