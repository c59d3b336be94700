"""Which sampled parameters mattered: Optuna's PED-ANOVA importances of a sampled search, from the store's trials.

PED-ANOVA (``optuna.importance.PedAnovaImportanceEvaluator``) asks how differently each parameter is spread among
the best configurations than among all of them; it is deterministic and needs no scikit-learn, which Optuna's
fANOVA and mean-decrease-impurity evaluators do, and it is meant for the few dozen trials a search here has.

The study is rebuilt in memory from the trials table, not read from the search's journal (``<store>/optuna``):
the report reads only the ledger, on any copy of the store (``s3://`` too, where no journal is kept), and the
ledger decides what a configuration scored. One Optuna trial per configuration whose every seed completed, its
value the mean over seeds, as the search told its study; a configuration stopped early scored on a smaller budget
and is left out, as Optuna's evaluators leave out pruned trials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from results.plot import Cell, SearchData

EVALUATOR = "PED-ANOVA"


@dataclass(frozen=True)
class Importances:
    """Each sampled parameter's share of the metric's variance (summing to 1), over ``configurations``."""

    shares: dict[str, float]  # largest first
    configurations: int


def distribution(kind: str, values: Any) -> Any:
    """The Optuna distribution of a space file's parameter (its kind and values as the file gives them)."""
    import optuna

    if kind == "choice":
        return optuna.distributions.CategoricalDistribution(list(values))
    if kind == "int":
        return optuna.distributions.IntDistribution(int(values[0]), int(values[1]))
    return optuna.distributions.FloatDistribution(float(values[0]), float(values[1]), log=kind == "loguniform")


def importances(data: SearchData, cells: Sequence[Cell], mode: str, minimum: int = 2) -> Importances | None:
    """PED-ANOVA over the completed configurations, the best by ``mode``; None for a search that samples nothing,
    with fewer than ``minimum`` configurations completed, or where all of them scored the same (nothing to explain)."""
    sampled = data.sampled
    done = [c for c in cells if c.scored and not c.unfinished]
    if not sampled or len(done) < minimum or len({c.mean for c in done}) == 1:
        return None
    import optuna

    space = data.space["space"]
    dists = {name: distribution(kind, space[name][kind]) for name, kind in sampled.items()}
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    for cell in done:
        params = {name: cell.trials[0][name] for name in sampled}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=cell.mean))
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    return Importances(dict(optuna.importance.get_param_importances(study, evaluator=evaluator)), len(done))
