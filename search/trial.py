"""One trial of a search: the Tune function that fits a Ray Train torch trainer on the trial's config
(``search.backend.trial_trainer``: Train's ``TorchTrainer`` less the torch import in this process).

Apart from ``search.tune`` so that a trial's process imports only what a trial needs (not Optuna, the space
parser, the loop's models): every trial is a new process. (Tune's ``reuse_actors`` would keep it, but a trial
ASHA stops keeps training in the kept process, since stopping does not end a running ``fit``, and the next
trial given that process errors.)

How an epoch travels: a Train worker's ``ray.train.report`` reaches the trial's Train controller (an actor of
its own), whose ``LedgerReport`` appends the epoch's row to the ledger and hands the epoch to the trial's
``TrialReports`` actor; the trial function, blocked on that actor, passes it to Tune with ``tune.report``.
Ray's own ``TuneReportCallback`` does the same through a ``ray.util.queue.Queue`` that Tune polls every
0.2 s, and every empty poll is a failed actor task in the dashboard (five a second per running trial).
Here both ends wait without a timeout, so no task fails while a trial waits for its epochs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import ray
import ray.train
from ray import tune
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

from results.ledger import EpochWriter
from results.store import Store
from search.backend import trial_trainer
from search.resume import Pins
from trainable.config import TrainConfig
from trainable.worker import FIT_STARTED_KEY, WRITER_KEY, train_loop_per_worker

# What ``TuneReportCallback`` names the metric that carries an epoch's checkpoint, kept for Tune's results.
CHECKPOINT_PATH_KEY = "checkpoint_path"


def run_trial(
    config: dict[str, Any], train_storage: str, workers: int, cpus: float, gpus: float, store: Store, search_id: str, pins: Pins
) -> None:
    """One Tune trial: fit a torch trainer on this trial's config; its epochs go to the ledger, then to Tune.

    The Train run is named after the trial's ledger id, so a retried trial, or a trial of a resumed search,
    finds its earlier run's checkpoint and continues from it. Tune is given each epoch's checkpoint path, not
    the checkpoint: Tune would copy every checkpoint into its own folder, and a retry resumes from Train's.
    """
    tune_id = tune.get_context().get_trial_id()
    trial_id = pins.trial_id(config, tune_id)
    writer = EpochWriter(store, search_id, trial_id, config.get("seed"))
    reports = TrialReports.remote(trial_id if trial_id == tune_id else f"{trial_id} (tune {tune_id})")
    resources = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    trainer = trial_trainer(
        train_loop_per_worker,
        train_loop_config={**config, WRITER_KEY: writer, FIT_STARTED_KEY: time.time()},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=f"train-{trial_id}",
            storage_path=train_storage,
            callbacks=[LedgerReport(writer, reports)],
            # Tune retries a failed trial (max_failures of the space). A worker group waiting for resources
            # keeps waiting (Train's default): on a cluster that is the autoscaler at work, and a local
            # instance never starts more trials than fit (search.runner).
            failure_config=ray.train.FailureConfig(max_failures=0),
        ),
    )
    report_epochs(trainer, reports, last_epoch=TrainConfig.parse(config).epochs)


def report_epochs(trainer: DataParallelTrainer, reports: Any, last_epoch: int) -> None:
    """Fit ``trainer``, whose callbacks put each epoch into ``reports`` (a ``TrialReports``), and hand every
    epoch (its metrics' ``epoch``) to Tune from this thread, the trial function's, until the fit ends or
    ``last_epoch`` has been handed on; raise what the fit raised.

    ``fit`` blocks until the run ends, so it runs on a thread of its own, which puts ``None`` when it is done.
    A daemon, as Tune's own thread of the trial function: when Tune stops the trial (ASHA), ``tune.report``
    ends this thread and the process exits with the run still going; its controller and workers, owned by
    this process, end with it (their tasks show as failed, ``WORKER_DIED``), and Train's placement-group
    cleaner frees their resources. So epoch ``last_epoch`` reaches Tune only once the fit has returned: Tune
    may end the trial as soon as it has it (ASHA does at ``max_t``), and a run that trained to its end should
    not be killed while Train shuts it down.
    """
    failed: list[BaseException] = []
    last = threading.Event()  # the last epoch is here: no ``None`` needed, none left behind in flight
    fit = threading.Thread(target=_fit, args=(trainer, reports, failed, last), name="fit", daemon=True)
    fit.start()
    while (metrics := ray.get(reports.get.remote())) is not None:
        if metrics.get("epoch") == last_epoch:
            last.set()
            fit.join()
            tune.report(metrics)
            break
        tune.report(metrics)
    if failed:
        raise failed[0]


def _fit(trainer: DataParallelTrainer, reports: Any, failed: list[BaseException], last: threading.Event) -> None:
    try:
        trainer.fit()
    except BaseException as error:  # re-raised by the trial function, so Tune sees the trial fail
        failed.append(error)
    finally:
        if not last.is_set():
            reports.put.remote(None)  # after every epoch's put: the controller has ended when ``fit`` returns


@ray.remote(num_cpus=0)
class TrialReports:
    """The epochs of one trial's Train run on their way to its Tune function, one at a time.

    Both ``put`` and ``get`` wait as long as they must (an asyncio queue, no timeout), so no call ever fails
    for want of an item. One item at most: the controller waits in ``put`` until Tune has taken the epoch
    before, as Train waits for Tune with ``TuneReportCallback``. ``None`` is the last item: ``fit`` is done.
    Its repr names the trial, so the dashboard's Actors page finds a trial's actor by its id.
    """

    def __init__(self, trial: str) -> None:
        self.trial = trial
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=1)

    async def put(self, metrics: dict[str, Any] | None) -> None:
        await self.queue.put(metrics)

    async def get(self) -> dict[str, Any] | None:
        return await self.queue.get()

    def __repr__(self) -> str:
        return f"trial {self.trial}"


class TuneReport(ray.train.UserCallback):
    """Hands each report of the workers (rank 0's metrics, with the checkpoint's path) to the trial function.

    Runs in the Train controller. Like Ray's ``TuneReportCallback``, without its polled queue.
    """

    def __init__(self, reports: Any) -> None:
        self.reports = reports

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: ray.train.Checkpoint | None) -> None:
        epoch = dict(metrics[0])
        if checkpoint is not None:
            epoch[CHECKPOINT_PATH_KEY] = checkpoint.path
        ray.get(self.reports.put.remote(epoch))


class LedgerReport(TuneReport):
    """Appends each epoch's row to the ledger once its checkpoint is stored, then hands the epoch to Tune.

    Every epoch the loop trains ends in a report with a checkpoint; the one report without (a run restored
    after its last epoch) repeats a row that ``RaySession.restore`` has appended again already, and reaches
    Tune only so the scheduler learns how the run ended.
    """

    def __init__(self, writer: EpochWriter, reports: Any) -> None:
        super().__init__(reports)
        self.writer = writer

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: ray.train.Checkpoint | None) -> None:
        if checkpoint is not None:
            self.writer.write(metrics[0], checkpoint.path)
        super().after_report(run_context, metrics, checkpoint)
