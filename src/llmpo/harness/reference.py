"""Reference instances of docs/reference-instances.md, by name, for tests, benchmarks and docs."""

from __future__ import annotations

import numpy as np

from llmpo.errors import ConfigError
from llmpo.harness.instances import (
    UnstructuredInstance,
    bradley_terry_matrix,
    make_unstructured_instance,
)

BT_UTILITIES: dict[str, list[float]] = {
    "BT5": [1.0, 0.8, 0.6, 0.4, 0.2],
    "BT4": [0.5, 0.3, 0.25, 0.0],
    "BT10": [1.0 - i / 9 for i in range(10)],
}


def _winner_and_cycle(n_policies: int, winner_prob: float, others: dict[tuple[int, int], float]):
    matrix = np.full((n_policies, n_policies), 0.5)
    matrix[0, 1:] = winner_prob
    matrix[1:, 0] = 1.0 - winner_prob
    for (a, b), p in others.items():
        matrix[a, b], matrix[b, a] = p, 1.0 - p
    return matrix


def reference_instance(name: str) -> UnstructuredInstance:
    """One of the unstructured instances of docs/reference-instances.md: BT5, BT4, BT10, AB4, CYC4.

    AB4: p_0j = .55, p_12 = p_13 = p_23 = .9. CYC4: p_0j = .6, p_12 = p_23 = p_31 = .8 (an
    intransitive cycle among the non-winners).
    """
    if name in BT_UTILITIES:
        matrix = bradley_terry_matrix(BT_UTILITIES[name])
    elif name == "AB4":
        matrix = _winner_and_cycle(4, 0.55, {(1, 2): 0.9, (1, 3): 0.9, (2, 3): 0.9})
    elif name == "CYC4":
        matrix = _winner_and_cycle(4, 0.6, {(1, 2): 0.8, (2, 3): 0.8, (3, 1): 0.8})
    else:
        known = ", ".join([*BT_UTILITIES, "AB4", "CYC4"])
        raise ConfigError(f"unknown reference instance {name!r}; choose one of {known}")
    return make_unstructured_instance(matrix)


REFERENCE_NAMES = (*BT_UTILITIES, "AB4", "CYC4")
