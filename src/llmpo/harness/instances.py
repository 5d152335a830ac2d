"""Simulation instances (docs/cli.md): known win probabilities, loaded from JSON and validated.

Unstructured instance file::

    {"policies": ["a", "b", "c"],
     "win_prob": [[0.5, 0.6, 0.7], [0.4, 0.5, 0.6], [0.3, 0.4, 0.5]],
     "tie_prob": [[0, 0.2, 0], [0.2, 0, 0], [0, 0, 0]]}     # optional

``win_prob[i][j]`` is P(i ≻ j) counting a tie as ½, so it is the mean outcome of i against j;
``tie_prob[i][j]`` (symmetric) is the probability of a tie. P(i wins) = p − t/2, so the decisive
win probability P(i wins | not a tie) is (p − t/2)/(1 − t) (docs/ties.md;
:func:`tied_instance` builds an instance from it).

Structured instance file (Bradley–Terry with features, P(i ≻ j) = σ(θᵀ(x_i − x_j)))::

    {"policies": ["a", "b", "c"], "features": [[1, 0], [0, 1], [0, 0]], "theta": [0.5, 0.2]}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from llmpo.errors import DataError
from llmpo.jsonl import parse_json, read_text
from llmpo.spaces import Structured, policy_names
from llmpo.stats.unstructured import condorcet_winner

TOLERANCE = 1e-9


class InstanceError(DataError):
    """An instance file or matrix that cannot be used, with the reason and the fix."""


@dataclass(frozen=True)
class UnstructuredInstance:
    """A preference matrix with optional tie probabilities.

    Attributes
    ----------
    policies : tuple of str
        Policy names.
    win_prob : ndarray
        K×K matrix of P(i ≻ j) (ties counted ½).
    tie_prob : ndarray
        K×K symmetric matrix of tie probabilities (zeros when there are no ties).
    """

    policies: tuple[str, ...]
    win_prob: NDArray[np.float64]
    tie_prob: NDArray[np.float64]

    @property
    def n_policies(self) -> int:
        """Number of policies K."""
        return len(self.policies)

    @property
    def best(self) -> int | None:
        """The Condorcet winner, or None."""
        return condorcet_winner(self.win_prob)

    def to_json(self) -> dict[str, Any]:
        """The instance-file form."""
        data: dict[str, Any] = {"policies": list(self.policies), "win_prob": self.win_prob.tolist()}
        if np.any(self.tie_prob):
            data["tie_prob"] = self.tie_prob.tolist()
        return data


def _square_matrix(values: Any, name: str, size: int) -> NDArray[np.float64]:
    try:
        matrix = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise InstanceError(f"{name}: must be a K×K matrix of numbers") from None
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise InstanceError(f"{name}: must be square (K×K), got shape {matrix.shape}")
    if matrix.shape[0] != size:
        raise InstanceError(
            f"{name}: is {matrix.shape[0]}×{matrix.shape[0]} but there are {size} policies"
        )
    if not np.all(np.isfinite(matrix)):
        raise InstanceError(f"{name}: contains a non-finite value")
    return matrix


def make_unstructured_instance(
    win_prob: Any,
    policies: list[str] | None = None,
    tie_prob: Any = None,
    require_winner: bool = True,
) -> UnstructuredInstance:
    """Validate a preference matrix (and tie matrix) and build an instance.

    Raises
    ------
    InstanceError
        Naming the first problem found: shape, range, p_ij + p_ji ≠ 1, diagonal, duplicate
        names, fewer than 2 policies, tie probabilities incompatible with p, no Condorcet winner.
    """
    try:
        size = len(win_prob)
    except TypeError:
        raise InstanceError("win_prob: must be a K×K matrix of numbers") from None
    try:
        names = policy_names(policies if policies is not None else size)
    except ValueError as error:
        raise InstanceError(str(error)) from None
    matrix = _square_matrix(win_prob, "win_prob", len(names))
    if np.any((matrix < 0) | (matrix > 1)):
        i, j = np.argwhere((matrix < 0) | (matrix > 1))[0]
        raise InstanceError(f"win_prob[{i}][{j}] = {matrix[i, j]} is outside [0, 1]")
    asymmetry = np.abs(matrix + matrix.T - 1.0)
    np.fill_diagonal(asymmetry, 0.0)
    if np.any(asymmetry > TOLERANCE):
        i, j = np.argwhere(asymmetry > TOLERANCE)[0]
        raise InstanceError(
            f"win_prob[{i}][{j}] + win_prob[{j}][{i}] = {matrix[i, j] + matrix[j, i]:.12g}, "
            "must equal 1 (P(i beats j) + P(j beats i), ties counted 1/2)"
        )
    if np.any(np.abs(np.diag(matrix) - 0.5) > TOLERANCE):
        raise InstanceError("win_prob: the diagonal must be 0.5")
    ties = (
        np.zeros_like(matrix)
        if tie_prob is None
        else _square_matrix(tie_prob, "tie_prob", len(names))
    )
    np.fill_diagonal(ties, 0.0)
    if np.any(np.abs(ties - ties.T) > TOLERANCE):
        raise InstanceError("tie_prob: must be symmetric (a tie of i and j is a tie of j and i)")
    too_many = (ties < 0) | (ties / 2 > np.minimum(matrix, 1 - matrix) + TOLERANCE)
    if np.any(too_many):
        i, j = np.argwhere(too_many)[0]
        raise InstanceError(
            f"tie_prob[{i}][{j}] = {ties[i, j]}: must lie in [0, 2·min(p, 1−p)] so that "
            "P(win) = p − tie/2 and P(loss) = 1 − p − tie/2 are probabilities"
        )
    if require_winner and condorcet_winner(matrix) is None:
        raise InstanceError(
            "win_prob: no Condorcet winner (no policy beats every other with p > 1/2); "
            "the optimal policy is undefined"
        )
    return UnstructuredInstance(names, matrix, ties)


@dataclass(frozen=True)
class StructuredInstance:
    """A Bradley–Terry model with features: P(a ≻ b) = σ(θᵀ(x_a − x_b)) (docs/structured.md).

    Attributes
    ----------
    policies : tuple of str
        Policy names.
    features : ndarray
        K × d feature matrix (validated as by :class:`~llmpo.spaces.Structured`).
    theta : ndarray
        The true parameter (d,).
    """

    policies: tuple[str, ...]
    features: NDArray[np.float64]
    theta: NDArray[np.float64]

    @property
    def n_policies(self) -> int:
        """Number of policies K."""
        return len(self.policies)

    @property
    def utilities(self) -> NDArray[np.float64]:
        """θᵀx_i for every policy."""
        return self.features @ self.theta

    @property
    def best(self) -> int | None:
        """argmax θᵀx, or None when the top utility is shared (no unique optimal policy)."""
        utilities = self.utilities
        top = np.flatnonzero(utilities >= utilities.max() - TOLERANCE)
        return int(top[0]) if top.size == 1 else None

    def space(self) -> Structured:
        """The policy space of this instance."""
        return Structured(self.features, self.policies)

    def to_json(self) -> dict[str, Any]:
        """The instance-file form."""
        return {
            "policies": list(self.policies),
            "features": self.features.tolist(),
            "theta": self.theta.tolist(),
        }


def make_structured_instance(
    features: Any, theta: Any, policies: list[str] | None = None, require_winner: bool = True
) -> StructuredInstance:
    """Validate features and θ and build an instance.

    Raises
    ------
    InstanceError
        Naming the first problem: features refused by :class:`~llmpo.spaces.Structured`, θ of
        the wrong length or not finite, or (with ``require_winner``) a tie for the best utility.
    """
    try:
        space = Structured(features, policies)
    except ValueError as error:
        raise InstanceError(str(error)) from None
    try:
        parameter = np.asarray(theta, dtype=float)
    except (TypeError, ValueError):
        raise InstanceError("theta: must be a list of numbers") from None
    if parameter.shape != (space.dimension,):
        raise InstanceError(
            f"theta: has shape {parameter.shape}, expected one number per feature "
            f"({space.dimension})"
        )
    if not np.all(np.isfinite(parameter)):
        raise InstanceError("theta: contains a non-finite value")
    instance = StructuredInstance(space.policies, space.features, parameter)
    if require_winner and instance.best is None:
        raise InstanceError(
            "theta: several policies share the best utility; the optimum is not unique"
        )
    return instance


def load_instance(
    path: str | Path, require_winner: bool = True
) -> UnstructuredInstance | StructuredInstance:
    """Read and validate an instance file (docs/cli.md): unstructured or structured.

    A file with ``"features"`` and ``"theta"`` is structured, one with ``"win_prob"`` is not.

    Raises
    ------
    InstanceError
        When the file cannot be read or is not a valid instance; the message names the file.
    """
    path = Path(path)
    try:
        data = parse_json(read_text(path, InstanceError), str(path), InstanceError)
    except OSError as error:
        raise InstanceError(f"{path}: cannot read ({error.strerror})") from None
    if isinstance(data, dict) and "features" in data:
        if "theta" not in data:
            raise InstanceError(f"{path}: a structured instance needs 'theta' next to 'features'")
        try:
            return make_structured_instance(
                data["features"], data["theta"], data.get("policies"), require_winner
            )
        except InstanceError as error:
            raise InstanceError(f"{path}: {error}") from None
    if not isinstance(data, dict) or "win_prob" not in data:
        raise InstanceError(
            f"{path}: expected an object with 'policies' and 'win_prob' (unstructured) or "
            "'features' and 'theta' (structured)"
        )
    try:
        return make_unstructured_instance(
            data["win_prob"], data.get("policies"), data.get("tie_prob"), require_winner
        )
    except InstanceError as error:
        raise InstanceError(f"{path}: {error}") from None


def bradley_terry_matrix(utilities: Any) -> NDArray[np.float64]:
    """p_ij = σ(θ_i − θ_j): the preference matrix of a Bradley–Terry model."""
    theta = np.asarray(utilities, dtype=float)
    return 1.0 / (1.0 + np.exp(-(theta[:, None] - theta[None, :])))


def tied_instance(
    decisive_win_prob: Any, tie_prob: Any, policies: list[str] | None = None
) -> UnstructuredInstance:
    """An instance from decisive win probabilities and tie probabilities (Davidson-style).

    P(i wins | not a tie) = ``decisive_win_prob[i, j]`` and P(tie) = ``tie_prob`` (a number, or
    a symmetric K×K matrix), so P(i ≻ j) = ½ + (1 − t)(p_d − ½) with ties counted ½.

    Raises
    ------
    InstanceError
        As :func:`make_unstructured_instance`.
    """
    decisive = np.asarray(decisive_win_prob, dtype=float)
    ties = np.broadcast_to(np.asarray(tie_prob, dtype=float), decisive.shape).copy()
    np.fill_diagonal(ties, 0.0)
    return make_unstructured_instance(0.5 + (1.0 - ties) * (decisive - 0.5), policies, ties)
