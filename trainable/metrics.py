"""The names every epoch reports: shared by the loop, the search schema and the Parquet tables.

Kept apart from the loop so that reading results or checking a space never imports torch.
"""

# Reported every epoch by every method; a metric a method lacks is NaN, so result tables stay rectangular.
METRICS = (
    "top1", "top5", "aux_top1",
    "loss", "loss_sup", "loss_pl", "loss_ca",
    "mask_rate_primary", "mask_rate_aux", "pl_acc_primary", "pl_acc_aux",
    "epoch", "epoch_time_s", "clips_per_s",
)  # fmt: skip
# Also reported each epoch: the learning rate, the labeled subset's identity, unreadable videos so far; and on the
# first epoch of every run (NaN on the others) how long its start took: ``startup_s`` from the trial calling
# ``fit`` until the worker began (Train controller, worker process, process group), ``setup_s`` from then until
# the first step (imports, dataset index, models, checkpoint).
REPORTED = METRICS + ("lr", "subset_hash", "videos_missing", "videos_skipped", "startup_s", "setup_s")
