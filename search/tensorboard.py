"""Each trial's curves as TensorBoard event files: ``tensorboard --logdir <store>/tune/<search>``.

Tune writes event files of its own (``TBXLoggerCallback``) with ``training_iteration`` on the x-axis, which
restarts at 1 when a trial is retried or resumed while its Train run continues mid-run, into a folder named after
every value of the trial's config (cut off mid-name). Here each trial's folder is its ledger id and the values the
search varies, and every reported metric is a scalar at its ``epoch``, the axis the schedulers and the store use.

A resumed trial keeps its ledger id (``search.resume.Pins``), so it finds its folder again and adds an event file
beside the earlier ones: TensorBoard joins them into one curve. On a folder store the files are written straight
into the store, readable while the search runs; on ``s3://`` Tune's driver uploads them with its experiment state.
"""

from __future__ import annotations

import math
import re
from numbers import Real
from typing import Any

import pyarrow.fs as pafs
from ray.tune.experiment import Trial
from ray.tune.logger import TBXLoggerCallback
from ray.tune.result import AUTO_RESULT_KEYS

from search.resume import Pins
from search.space import Space

FOLDER_BYTES = 160  # well under a file name's 255, leaving room for Tune's own suffixes on its files
EPOCH = "epoch"


def searched_keys(space: Space) -> list[str]:
    """What tells a search's trials apart: the space's parameters, the keys its cells set, and the seed."""
    keys = list(space.spec.space)
    for cell in space.spec.cells:
        keys += [k for k in cell if k not in keys]
    return [*keys, "seed"]


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", str(value))


class TrialFolder:
    """Tune's ``trial_dirname_creator``: ``<trial id>_<key>=<value>,…`` over the searched keys only.

    The trial id is the ledger's (a trial resuming an earlier one keeps that one's id), so its folder is the same
    on every run of the search. Pairs that would pass ``FOLDER_BYTES`` are left out whole, never cut mid-value.
    """

    def __init__(self, keys: list[str], pins: Pins) -> None:
        self.keys = keys
        self.pins = pins

    def __call__(self, trial: Trial) -> str:
        name = self.pins.trial_id(trial.config, trial.trial_id)
        pairs = [f"{k}={_value(trial.config[k])}" for k in self.keys if k in trial.config]
        for i, pair in enumerate(pairs):
            candidate = f"{name}{',' if i else '_'}{pair}"
            if len(candidate.encode()) > FOLDER_BYTES:
                break
            name = candidate
        return name


class EpochTensorBoard(TBXLoggerCallback):
    """Tune's TensorBoard logger with the epoch as the step, and only what the trial reported.

    Each numeric, finite value of a report is a scalar under its own name (``top1``, ``loss``, …) at the report's
    ``epoch``; Tune's bookkeeping (``time_this_iter_s``, ``training_iteration``, …) and the NaNs of metrics a
    method lacks are left out. Passing it to the Tuner replaces Tune's default logger (one per kind).
    """

    def log_trial_start(self, trial: Trial) -> None:
        if trial in self._trial_writer:
            self._trial_writer[trial].close()
        trial.init_local_path()
        local = isinstance(trial.storage.storage_filesystem, pafs.LocalFileSystem)
        self._trial_writer[trial] = self._summary_writer_cls(trial.path if local else trial.local_path, flush_secs=30)
        self._trial_result[trial] = {}

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        if EPOCH not in result:
            return
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        writer = self._trial_writer[trial]
        written = {}
        for key, value in result.items():
            if key == EPOCH or key in AUTO_RESULT_KEYS or isinstance(value, bool) or not isinstance(value, Real):
                continue
            if math.isfinite(value):
                writer.add_scalar(key, value, global_step=int(result[EPOCH]))
                written[key] = value
        self._trial_result[trial] = written
        writer.flush()
