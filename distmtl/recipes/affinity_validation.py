"""How well an affinity signal predicts which tasks to train together, scored against trained groupings.

Per seed, every trained grouping has a measured quality, Δm against independent networks of the same seed (each task's
test headline metric relative to its independent network's, signed so that higher is better, averaged over the tasks,
in percent: every task counts alike). Each signal's K × K matrix (measured in a short hard-sharing run of the same
seed) predicts a score for every grouping (:mod:`distmtl.sharing.choose`). Per signal and seed:

- Spearman's ρ between the predicted scores and the measured Δm of the trained groupings;
- the grouping the signal chooses within the parameter budget (the highest predicted score among all partitions with
  at most the budget's number of branches) and its regret: the best measured Δm minus the chosen grouping's;
- whether that regret is within one standard deviation of the best, σ being the sample standard deviation over seeds
  of the measured Δm of the grouping that is best on average (the seed-to-seed spread of one training);
- the adjusted Rand index of the chosen grouping against the grouping with the best mean measured Δm and, where the
  data has a construction, of the signal's best grouping into the construction's number of groups against it;
- the cost of the signal's run in trial-epochs (its epochs × (1 + the measurement's time overhead)) against training
  every grouping within the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import adjusted_rand_score

from distmtl.evaluation.statistics import summarize
from distmtl.sharing.choose import Grouping, best_groupings, ranked, to_labels


@dataclass
class SeedEvidence:
    """One seed: the trained groupings (name → groups) and their measured Δm, each signal's matrix, and the costs."""

    tasks: list[str]
    groupings: dict[str, Grouping]
    delta_m: dict[str, float]
    matrices: dict[str, np.ndarray]
    signal_epochs: dict[str, float]  # each signal's run's cost in trial-epochs
    exhaustive_epochs: float  # training every grouping within the budget, in trial-epochs


@dataclass
class SignalResult:
    """One signal on one seed."""

    spearman: float
    chosen: Grouping
    regret: float
    ari_best: float
    ari_construction: float = math.nan
    chosen_at_construction: Grouping = field(default_factory=list)


def delta_m(metrics: dict[str, float], reference: dict[str, float], headlines: dict[str, tuple[str, str]]) -> float:
    """Δm (percent) of ``metrics`` against ``reference`` (test metrics of the same seed); ``headlines`` maps each task
    to its headline metric and direction (``max``/``min``)."""
    terms = []
    for task, (metric, mode) in headlines.items():
        value, base = metrics[f"test/{task}/{metric}"], reference[f"test/{task}/{metric}"]
        terms.append((1.0 if mode == "max" else -1.0) * (value - base) / base)
    return 100.0 * sum(terms) / len(terms)


def same_grouping(a: Grouping, b: Grouping) -> bool:
    return sorted(map(sorted, a)) == sorted(map(sorted, b))


def evaluate(seed: SeedEvidence, signal: str, branch_limit: int, best_name: str,
             construction: dict[str, int] | None = None) -> SignalResult:
    """The signal's scores on one seed (``best_name``: the grouping with the best mean measured Δm over seeds)."""
    names = list(seed.groupings)
    matrix = seed.matrices[signal]
    predicted = ranked(matrix, seed.tasks, [seed.groupings[n] for n in names])
    measured = [seed.delta_m[n] for n in names]
    rho = float(spearmanr(predicted, measured).statistic) if len(set(predicted)) > 1 else math.nan
    candidates = best_groupings(matrix, seed.tasks, list(range(1, branch_limit + 1)))
    chosen = max(candidates.values(), key=lambda found: found[1])[0]
    trained = [n for n in names if same_grouping(seed.groupings[n], chosen)]
    regret = max(measured) - seed.delta_m[trained[0]] if trained else math.nan
    result = SignalResult(rho, chosen, regret, _ari(seed.tasks, chosen, seed.groupings[best_name]))
    if construction:
        groups = len(set(construction.values()))
        at = best_groupings(matrix, seed.tasks, [groups])[groups][0]
        result.chosen_at_construction = at
        result.ari_construction = float(adjusted_rand_score([construction[t] for t in seed.tasks],
                                                            to_labels(seed.tasks, at)))
    return result


def random_regret(seed: SeedEvidence) -> float:
    """The expected regret of a grouping drawn uniformly from the trained ones."""
    values = list(seed.delta_m.values())
    return max(values) - float(np.mean(values))


def fixed_groupings(seeds: list[SeedEvidence]) -> list[str]:
    """The names under which every seed trained the same grouping (not a per-seed choice)."""
    first = seeds[0].groupings
    return [n for n in first if all(n in s.groupings and same_grouping(s.groupings[n], first[n]) for s in seeds)]


def best_on_average(seeds: list[SeedEvidence]) -> tuple[str, float]:
    """The grouping trained on every seed with the highest mean Δm, and the sample std of its Δm."""
    best = max(fixed_groupings(seeds), key=lambda n: np.mean([s.delta_m[n] for s in seeds]))
    return best, summarize([s.delta_m[best] for s in seeds]).std


def summary_table(seeds: list[SeedEvidence], signals: list[str], branch_limit: int,
                  construction: dict[str, int] | None = None
                  ) -> tuple[list[dict], dict[str, list[SignalResult]], str, float]:
    """Per signal (and a random choice): mean ± std over seeds of every score; the per-seed results; the grouping
    best on average and its σ."""
    best, sigma = best_on_average(seeds)
    results = {s: [evaluate(seed, s, branch_limit, best, construction) for seed in seeds] for s in signals}
    rows = []
    for signal, found in results.items():
        regrets = [r.regret for r in found]
        rows.append({"signal": signal,
                     "spearman": summarize([r.spearman for r in found]),
                     "regret": summarize(regrets),
                     "within_sigma": sum(1 for r in regrets if r <= sigma), "n": len(found),
                     "ari_construction": summarize([r.ari_construction for r in found]),
                     "ari_best": summarize([r.ari_best for r in found]),
                     "cost": summarize([s.signal_epochs[signal] for s in seeds]),
                     "exhaustive": summarize([s.exhaustive_epochs for s in seeds])})
    regrets = [random_regret(seed) for seed in seeds]
    rows.append({"signal": "random grouping (expected)", "spearman": summarize([]), "regret": summarize(regrets),
                 "within_sigma": None, "n": len(seeds), "ari_construction": summarize([]), "ari_best": summarize([]),
                 "cost": summarize([]), "exhaustive": summarize([])})
    return rows, results, best, sigma


def _ari(tasks: list[str], a: Grouping, b: Grouping) -> float:
    return float(adjusted_rand_score(to_labels(tasks, a), to_labels(tasks, b)))
