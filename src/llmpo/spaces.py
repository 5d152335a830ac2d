"""Policy spaces: the set of candidate policies and the statistical model of their comparisons."""

from __future__ import annotations

import collections
import itertools
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from llmpo.errors import ConfigError
from llmpo.limits import name_problem
from llmpo.models.base import PreferenceModel
from llmpo.models.structured import StructuredModel
from llmpo.models.unstructured import UnstructuredModel
from llmpo.stats.thresholds import Threshold
from llmpo.strategies.base import Strategy
from llmpo.strategies.structured import BestResponse
from llmpo.strategies.structured import Tracking as StructuredTracking
from llmpo.strategies.unstructured import BalanceRule, TrackingRule


def policy_names(policies: int | Sequence[str]) -> tuple[str, ...]:
    """Names of the policies: given, or ``p0, p1, …`` for a count.

    Refuses < 2, duplicates, and names :func:`llmpo.limits.name_problem` refuses (too long,
    control or bidirectional-override characters).
    """
    if isinstance(policies, int):
        names: tuple[str, ...] = tuple(f"p{i}" for i in range(policies))
    else:
        names = tuple(str(name) for name in policies)
    if len(names) < 2:
        raise ConfigError(f"policies: need at least 2 policies, got {len(names)}")
    duplicates = sorted(name for name, n in collections.Counter(names).items() if n > 1)
    if duplicates:
        raise ConfigError(f"policies: duplicate names {duplicates}; give each policy its own name")
    for name in names:
        if (problem := name_problem(name)) is not None:
            raise ConfigError(f"policies: the name {name[:40]!r} {problem}; rename the policy")
    return names


class Space(ABC):
    """A policy space: names the policies and builds the model and the LLM-PO sampling rules."""

    policies: tuple[str, ...]
    #: Name of the stopping threshold used when the experiment does not choose one.
    default_threshold: str = "kt"

    @property
    def n_policies(self) -> int:
        """Number of policies K."""
        return len(self.policies)

    @abstractmethod
    def make_model(
        self,
        delta: float,
        threshold: Threshold,
        epsilon: float,
        assume_condorcet: bool,
        ties: str = "decisive",
    ) -> PreferenceModel:
        """The statistics of this space for one experiment (``ties``: docs/ties.md)."""

    @abstractmethod
    def strategies(self) -> dict[str, type[Strategy]]:
        """The adaptive (LLM-PO) sampling rules of this space, by name; the first is the default."""


class Unstructured(Space):
    """No model of the policies: the optimal policy is the Condorcet winner (docs/statistics.md).

    Parameters
    ----------
    policies : int or sequence of str
        The number of policies, or their names.
    """

    def __init__(self, policies: int | Sequence[str]) -> None:
        self.policies = policy_names(policies)

    def make_model(
        self,
        delta: float,
        threshold: Threshold,
        epsilon: float,
        assume_condorcet: bool,
        ties: str = "decisive",
    ) -> UnstructuredModel:
        return UnstructuredModel(self.n_policies, delta, threshold, epsilon, assume_condorcet, ties)

    def strategies(self) -> dict[str, type[Strategy]]:
        return {BalanceRule.name: BalanceRule, TrackingRule.name: TrackingRule}

    def __repr__(self) -> str:
        return f"Unstructured({list(self.policies)!r})"


class Structured(Space):
    """Policies described by features: Bradley–Terry with utility θᵀx_i (docs/structured.md).

    P(i ≻ j) = σ(θᵀ(x_i − x_j)); the optimal policy is argmax_i θᵀx_i. Comparisons needed scale
    with the number of features d, not with K, and untested policies are ranked too. Build it from
    a K × d array, or from factors with :meth:`from_factors`.

    Parameters
    ----------
    features : array_like
        K × d matrix, one row per policy. Only differences x_i − x_j matter, so a constant column
        (an intercept) carries no information and is refused.
    policies : sequence of str, optional
        Policy names; ``p0, p1, …`` by default.
    feature_names : sequence of str, optional
        Column names, used in error messages and reports.

    Raises
    ------
    ValueError
        Naming the field and the fix: not a finite 2-D array, fewer than 2 policies, two
        policies with identical features, or features whose differences do not have full column
        rank (the message names the unidentifiable combinations of columns).
    """

    #: Universal inference or the direct test of each rival, whichever rules it out first: valid,
    #: grows with d rather than the number of pairs, and a close rival in a factor level does not
    #: pay the d-dimensional regret (docs/structured-stopping.md).
    default_threshold = "hybrid-lean"

    def __init__(
        self,
        features: ArrayLike,
        policies: Sequence[str] | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> None:
        try:
            matrix = np.array(features, dtype=float)
        except (TypeError, ValueError):
            raise ConfigError("features: must be a K×d array of numbers") from None
        if matrix.ndim != 2 or matrix.shape[1] < 1:
            raise ConfigError(
                f"features: must be a 2-D array (one row per policy), got shape {matrix.shape}"
            )
        self.policies = policy_names(policies if policies is not None else matrix.shape[0])
        if len(self.policies) != matrix.shape[0]:
            raise ConfigError(
                f"policies: {len(self.policies)} names for {matrix.shape[0]} feature rows"
            )
        self.feature_names = tuple(
            str(n) for n in (feature_names or [f"x{k}" for k in range(matrix.shape[1])])
        )
        if len(self.feature_names) != matrix.shape[1]:
            raise ConfigError(
                f"feature_names: {len(self.feature_names)} names for {matrix.shape[1]} columns"
            )
        bad = np.argwhere(~np.isfinite(matrix))
        if bad.size:
            i, k = bad[0]
            raise ConfigError(
                f"features[{i}][{k}] ({self.policies[i]}, {self.feature_names[k]}) is "
                f"{matrix[i, k]}; every feature must be a finite number"
            )
        _, first, inverse = np.unique(matrix, axis=0, return_index=True, return_inverse=True)
        duplicates = np.flatnonzero(first[inverse.ravel()] != np.arange(matrix.shape[0]))
        if duplicates.size:
            i = int(duplicates[0])
            j = int(first[inverse.ravel()[i]])
            raise ConfigError(
                f"features: policies {self.policies[j]!r} and {self.policies[i]!r} have identical "
                "features, so the model cannot tell them apart; remove one or add a feature "
                "that distinguishes them"
            )
        self._check_identifiable(matrix)
        self.features = matrix

    def _check_identifiable(self, matrix: NDArray[np.float64]) -> None:
        differences = matrix[1:] - matrix[0]
        # Full V (d × d) is all the null space needs; full U would be K × K (800 MB at 10,000).
        _, singular, axes = np.linalg.svd(
            differences, full_matrices=differences.shape[0] < differences.shape[1]
        )
        scale = max(float(singular[0]) if singular.size else 0.0, 1.0)
        rank = int(np.sum(singular > 1e-9 * scale))
        if rank == matrix.shape[1]:
            return
        described = []
        for axis in axes[rank:]:
            axis = axis / axis[np.argmax(np.abs(axis))]  # largest coefficient +1
            terms = [
                f"{c:+.3g}·{name}"
                for c, name in zip(axis, self.feature_names, strict=True)
                if abs(c) > 1e-6
            ]
            described.append(" ".join(terms))
        raise ConfigError(
            f"features: the differences x_i − x_j have rank {rank} < d = {matrix.shape[1]}, so "
            f"these combinations of columns are not identifiable from comparisons: "
            f"{'; '.join(described)}. Drop a column of each (an intercept, or one level of "
            "each one-hot factor), or add policies that vary them"
        )

    @classmethod
    def from_factors(
        cls,
        factors: Mapping[str, Sequence[str]] | Sequence[Mapping[str, str]],
        policies: Sequence[str] | None = None,
    ) -> Structured:
        """Policies as combinations of factor levels, one-hot encoded.

        Each factor is encoded with one column per level except its first (the reference level,
        whose effect is fixed to 0): with all levels the columns of a factor sum to 1 and their
        common shift is not identifiable from comparisons.

        Parameters
        ----------
        factors : mapping of factor → levels, or sequence of mappings factor → level
            A mapping means every combination (the full product, in row-major order); a
            sequence lists the policies, each as its levels.
        policies : sequence of str, optional
            Names; by default the levels joined, e.g. ``"gpt-4o|terse|0.7"``.

        Returns
        -------
        Structured
            With ``feature_names`` such as ``"prompt=terse"``.
        """
        if isinstance(factors, Mapping):
            names = list(factors)
            rows = [dict(zip(names, combo, strict=True))
                    for combo in itertools.product(*[factors[n] for n in names])]
        else:
            rows = [dict(row) for row in factors]
            names = list(rows[0]) if rows else []
        for index, row in enumerate(rows):
            if set(row) != set(names):
                raise ConfigError(
                    f"factors[{index}]: has factors {sorted(row)}, expected {sorted(names)}"
                )
        levels = {name: list(dict.fromkeys(str(row[name]) for row in rows)) for name in names}
        columns = [(name, level) for name in names for level in levels[name][1:]]
        matrix = np.array(
            [[1.0 if str(row[name]) == level else 0.0 for name, level in columns] for row in rows]
        )
        if policies is None:
            policies = ["|".join(str(row[name]) for name in names) for row in rows]
        return cls(matrix, policies, [f"{name}={level}" for name, level in columns])

    @property
    def dimension(self) -> int:
        """Number of features d."""
        return int(self.features.shape[1])

    def make_model(
        self,
        delta: float,
        threshold: Threshold,
        epsilon: float,
        assume_condorcet: bool,
        ties: str = "decisive",
    ) -> StructuredModel:
        """The structured statistics. ``assume_condorcet`` is moot: a BT model always has one.

        ``epsilon`` is on the win-probability scale, as in the unstructured space: the certified
        policy beats every other with probability > ½ − ε (decisive outcomes with
        ``ties="decisive"``).
        """
        return StructuredModel(self.features, delta, threshold, epsilon, ties)

    def strategies(self) -> dict[str, type[Strategy]]:
        return {BestResponse.name: BestResponse, StructuredTracking.name: StructuredTracking}

    def __repr__(self) -> str:
        return f"Structured(K={self.n_policies}, d={self.dimension})"
