"""Held-out tasks: the split of a task set between the selection run and the evaluation.

A split is a function of the task ids and the experiment's seed alone (the ids are sorted before
they are shuffled, so the order of a file does not matter), and it is recorded in the store when
the experiment is created, so an evaluation can check that none of its tasks was open to the
selection run.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from llmpo.errors import ConfigError

#: Stream of the experiment's seed that draws the split (distinct from the runs' streams).
HOLDOUT_STREAM = 0x686F6C64  # "hold"


def split_holdout(task_ids: Iterable[str], fraction: float, seed: int) -> tuple[str, ...]:
    """The held-out task ids: ``round(fraction × n)`` of the n distinct ids, drawn from the seed.

    At least one task is held out and at least one is left to the selection run.

    Parameters
    ----------
    task_ids : iterable of str
        Task ids (repeats count once).
    fraction : float
        Share held out, in (0, 1).
    seed : int
        The experiment's seed.

    Returns
    -------
    tuple of str
        The held-out ids, sorted.

    Raises
    ------
    ValueError
        When there are fewer than two distinct ids, or the fraction is outside (0, 1).
    """
    ids = sorted(set(task_ids))
    if len(ids) < 2:
        raise ConfigError(
            f"holdout: {len(ids)} distinct task id(s); a split needs at least 2. Fix: add tasks, "
            "or remove holdout"
        )
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"holdout.fraction must be in (0, 1), got {fraction}")
    count = min(len(ids) - 1, max(1, round(fraction * len(ids))))
    rng = np.random.default_rng(np.random.SeedSequence([seed, HOLDOUT_STREAM]))
    chosen = rng.permutation(len(ids))[:count]
    return tuple(sorted(ids[k] for k in chosen))
