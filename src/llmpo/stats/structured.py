"""Statistics of the structured policy space (docs/structured.md): Bradley–Terry with policy
features.

Policy i has features x_i ∈ R^d and utility θᵀx_i; P(a ≻ b) = σ(θᵀz_ab) with z_ab = x_a − x_b.
Comparisons are kept as aggregated pair statistics: for each distinct pair its difference vector
z, its count n and its sum of outcomes s (ties count ½), so every function below costs
O(#distinct pairs · d²) whatever the number of comparisons.

Contents
--------
* the log-likelihood LL(θ) = Σ [s θᵀz − n log(1 + e^{θᵀz})] with its gradient and Hessian as
  separate functions, a ridge MLE and the MLE constrained to a hyperplane λᵀy = 0 (the GLR's
  alternative), both by damped Newton from a warm start;
* the characteristic time T*(θ) in its two convex forms, solved by cvxpy (the references):
  :func:`optimal_allocation_exact` (exponential cone) and :func:`optimal_allocation_fisher`
  (matrix-fractional);
* :class:`AllocationSolver`, a fast and accurate solver of either form (a cutting-plane method
  over alternatives and pairs, warm-startable; ~0.1–2 s at K ≤ 30, agrees with cvxpy to 1e-4),
  used for ``llmpo bound`` and the oracle; :func:`fisher_frank_wolfe`, the cheap first-order
  solver of the Fisher form used inside the sampling loop (≈1% accuracy, ~0.3 s at K = 10,000),
  and :func:`candidate_pairs`, the pair set both use when K is large.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit, log_expit

from llmpo.errors import ConfigError, DataError
from llmpo.stats.bernoulli import kl_bernoulli, kl_confidence

if TYPE_CHECKING:
    from scipy.optimize import OptimizeResult

Form = Literal["exact", "fisher"]

# Newton stops when the Newton decrement ½ gᵀH⁻¹g (the predicted gain in log-likelihood) is
# below this; the statistics are compared with thresholds of order 1, so 1e-10 is far below
# anything that matters.
NEWTON_TOLERANCE = 1e-10
NEWTON_MAX_ITERATIONS = 100
# Keeps Newton systems solvable when the data do not identify every direction (few pairs seen).
HESSIAN_JITTER = 1e-12
# Clarabel's default tolerances (1e-8) leave T* of BT10 off by 5e-5 relative (906.14 instead of
# 906.16, measured by evaluating the returned w with exact best responses); 1e-10 fixes it.
CLARABEL_OPTIONS = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10}


# ---- likelihood ----------------------------------------------------------------------------------
def log_likelihood(
    theta: ArrayLike, differences: ArrayLike, counts: ArrayLike, wins: ArrayLike
) -> float:
    """Logistic (Bradley–Terry) log-likelihood on aggregated pair statistics.

    LL(θ) = Σ_k [s_k θᵀz_k − n_k log(1 + exp(θᵀz_k))], the log-likelihood of outcomes in [0, 1]
    (ties ½) up to a constant that does not depend on θ.

    Parameters
    ----------
    theta : array_like
        Parameter vector (d,).
    differences : array_like
        Feature differences z_k = x_a − x_b of the distinct pairs, (m, d).
    counts : array_like
        Comparisons n_k per pair (m,).
    wins : array_like
        Sum of outcomes s_k of a against b per pair (m,); 0 ≤ s_k ≤ n_k.

    Returns
    -------
    float
        LL(θ) ≤ 0.
    """
    margin = np.asarray(differences, float) @ np.asarray(theta, float)
    wins_arr, counts_arr = np.asarray(wins, float), np.asarray(counts, float)
    # s·u − n·log(1 + e^u) = s·log σ(u) + (n − s)·log σ(−u), stable for large |u|.
    return float(wins_arr @ log_expit(margin) + (counts_arr - wins_arr) @ log_expit(-margin))


def log_likelihood_gradient(
    theta: ArrayLike, differences: ArrayLike, counts: ArrayLike, wins: ArrayLike
) -> NDArray[np.float64]:
    """Gradient of :func:`log_likelihood`: Σ_k (s_k − n_k σ(θᵀz_k)) z_k."""
    z = np.asarray(differences, float)
    expected = np.asarray(counts, float) * expit(z @ np.asarray(theta, float))
    residual = np.asarray(wins, float) - expected
    return residual @ z


def log_likelihood_hessian(
    theta: ArrayLike, differences: ArrayLike, counts: ArrayLike, wins: ArrayLike
) -> NDArray[np.float64]:
    """Hessian of :func:`log_likelihood`: −Σ_k n_k σ_k (1 − σ_k) z_k z_kᵀ (negative semidefinite).

    ``wins`` does not enter; it is accepted so that the three functions share one signature.
    """
    z = np.asarray(differences, float)
    p = expit(z @ np.asarray(theta, float))
    return -(z.T * (np.asarray(counts, float) * p * (1.0 - p))) @ z


def fisher_information(
    theta: ArrayLike, differences: ArrayLike, weights: ArrayLike
) -> NDArray[np.float64]:
    """H(w) = Σ_k w_k σ_k (1 − σ_k) z_k z_kᵀ: Fisher information of weighted comparisons."""
    return -log_likelihood_hessian(theta, differences, weights, weights)


def _newton(
    objective_terms: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]],
    start: NDArray[np.float64],
    ridge: float,
    offset: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float64], bool]:
    """Maximize LL(θ) − (ridge/2)‖θ‖² by Newton with backtracking, from ``start``.

    With ``offset`` o the margins are z_kᵀθ + o_k (an affine constraint in reduced coordinates).
    Returns the maximizer and whether the Newton decrement fell below the tolerance (False when
    the maximum lies at infinity, e.g. for separable data without ridge).
    """
    z, n, s = objective_terms
    shift = np.zeros(n.size) if offset is None else offset
    theta = start.copy()

    def penalized(value: NDArray[np.float64]) -> float:
        margin = z @ value + shift
        fit = float(s @ log_expit(margin) + (n - s) @ log_expit(-margin))
        return fit - 0.5 * ridge * float(value @ value)

    current = penalized(theta)
    identity = np.eye(theta.size)
    for _ in range(NEWTON_MAX_ITERATIONS):
        p = expit(z @ theta + shift)
        gradient = (s - n * p) @ z - ridge * theta
        curvature = (z.T * (n * p * (1.0 - p))) @ z + (ridge + HESSIAN_JITTER) * identity
        step = np.linalg.solve(curvature, gradient)
        decrement = 0.5 * float(gradient @ step)
        if decrement < NEWTON_TOLERANCE:
            return theta, True
        size = 1.0
        while size > 1e-12:
            candidate = theta + size * step
            value = penalized(candidate)
            if value >= current + 0.25 * size * decrement:
                break
            size *= 0.5
        else:
            return theta, False
        theta, current = candidate, value
    return theta, False


def fit_mle(
    differences: ArrayLike,
    counts: ArrayLike,
    wins: ArrayLike,
    ridge: float = 0.0,
    start: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Ridge-regularized logistic MLE without intercept: argmax LL(θ) − (ridge/2)‖θ‖².

    Damped Newton from ``start`` (warm start; zeros by default). With ``ridge = 0`` the maximum
    may lie at infinity (separable data); Newton then stops when steps no longer improve.

    Parameters
    ----------
    differences, counts, wins : array_like
        Aggregated pair statistics, as in :func:`log_likelihood`.
    ridge : float
        Penalty ρ ≥ 0 (a N(0, I/ρ) prior on θ).
    start : array_like, optional
        Initial θ.

    Returns
    -------
    ndarray
        The estimate θ̂ (d,).
    """
    z = np.asarray(differences, float)
    theta0 = np.zeros(z.shape[1]) if start is None else np.asarray(start, float)
    return _newton((z, np.asarray(counts, float), np.asarray(wins, float)), theta0, ridge)[0]


def hyperplane_basis(direction: NDArray[np.float64]) -> NDArray[np.float64]:
    """Orthonormal basis (d × (d−1)) of the hyperplane {λ : λᵀy = 0} (Householder reflection)."""
    y = direction / np.linalg.norm(direction)
    d = y.size
    axis = np.zeros(d)
    axis[0] = 1.0
    # The reflection I − 2vvᵀ maps e_0 to ±y, so its other columns span y's orthogonal complement.
    v = y + math.copysign(1.0, y[0] if y[0] != 0 else 1.0) * axis
    v /= np.linalg.norm(v)
    reflection = np.eye(d) - 2.0 * np.outer(v, v)
    return reflection[:, 1:]


@dataclass(frozen=True)
class ConstrainedFit:
    """Result of :func:`fit_constrained_mle`.

    Attributes
    ----------
    lam : ndarray
        The constrained maximizer λ*.
    log_likelihood : float
        LL(λ*).
    converged : bool
        False when Newton did not reach its tolerance (the supremum may lie at infinity); then
        ``log_likelihood`` may be below the supremum and must not be used in a stopping rule.
    """

    lam: NDArray[np.float64]
    log_likelihood: float
    converged: bool


def fit_constrained_mle(
    differences: ArrayLike,
    counts: ArrayLike,
    wins: ArrayLike,
    direction: ArrayLike,
    start: ArrayLike | None = None,
    level: float = 0.0,
) -> ConstrainedFit:
    """max LL(λ) subject to λᵀy = c: the best fit in which the two policies of y tie (c = 0).

    With y = x_j − x_î this is the GLR's alternative "j is as good as î" (docs/structured.md); for
    one-hot features it merges the two utilities. With c = γ > 0 it is "j beats î by γ in utility",
    the alternative of ε-optimal identification. Solved by Newton in the coordinates of an
    orthonormal basis of the hyperplane, λ = c·y/‖y‖² + Bμ, so it has d − 1 unknowns.

    Parameters
    ----------
    differences, counts, wins : array_like
        Aggregated pair statistics, as in :func:`log_likelihood`.
    direction : array_like
        y (d,), non-zero.
    start : array_like, optional
        Warm start; projected onto the hyperplane.
    level : float
        c, the value of λᵀy on the hyperplane.

    Returns
    -------
    ConstrainedFit
    """
    z = np.asarray(differences, float)
    y = np.asarray(direction, float)
    basis = hyperplane_basis(y)
    anchor = (level / float(y @ y)) * y
    reduced = z @ basis
    mu0 = np.zeros(basis.shape[1]) if start is None else basis.T @ np.asarray(start, float)
    n, s = np.asarray(counts, float), np.asarray(wins, float)
    mu, converged = _newton((reduced, n, s), mu0, 0.0, z @ anchor if level else None)
    lam = anchor + basis @ mu
    return ConstrainedFit(lam, log_likelihood(lam, z, n, s), converged)


# ---- optimal allocation: references by cvxpy ---------------------------------------------------
@dataclass(frozen=True)
class StructuredAllocation:
    """Optimal proportions over pairs and characteristic time of a structured instance.

    Attributes
    ----------
    best : int
        i* = argmax_i θᵀx_i.
    t_star : float
        T*(θ): E[τ] ≥ T* · kl(δ, 1 − δ) for every δ-correct procedure (for the Fisher form, an
        approximation of it).
    rows, cols : ndarray of int
        The pairs (a, b) that were allowed weight.
    shares : ndarray
        w* on those pairs (sums to 1).
    form : {"exact", "fisher"}
        Which program was solved.
    """

    best: int
    t_star: float
    rows: NDArray[np.intp]
    cols: NDArray[np.intp]
    shares: NDArray[np.float64]
    form: Form

    def lower_bound(self, delta: float) -> float:
        """T* · kl(δ, 1 − δ): the fewest expected comparisons of any δ-correct procedure."""
        return self.t_star * kl_confidence(delta)

    def support(self, tolerance: float = 1e-6) -> list[tuple[int, int, float]]:
        """The pairs with share above ``tolerance`` as (a, b, share), largest share first."""
        keep = np.flatnonzero(self.shares > tolerance)
        keep = keep[np.argsort(-self.shares[keep])]
        return [(int(self.rows[k]), int(self.cols[k]), float(self.shares[k])) for k in keep]


def best_policy(features: ArrayLike, theta: ArrayLike) -> int:
    """i* = argmax_i θᵀx_i; refuses ties, where the optimal policy is not unique."""
    utilities = np.asarray(features, float) @ np.asarray(theta, float)
    order = np.argsort(-utilities)
    if utilities.size > 1 and utilities[order[0]] - utilities[order[1]] <= 1e-12:
        raise DataError(
            f"theta: policies {int(order[0])} and {int(order[1])} have the same utility; "
            "the optimal policy is not unique"
        )
    return int(order[0])


def all_pairs(n_policies: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Rows and columns of the K(K−1)/2 pairs a < b."""
    rows, cols = np.triu_indices(n_policies, 1)
    return rows.astype(np.intp), cols.astype(np.intp)


def _pairs_or_all(
    n_policies: int, pairs: tuple[ArrayLike, ArrayLike] | None
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    if pairs is None:
        return all_pairs(n_policies)
    return np.asarray(pairs[0], dtype=np.intp), np.asarray(pairs[1], dtype=np.intp)


def _allocation_problem(
    features: ArrayLike, theta: ArrayLike, pairs: tuple[ArrayLike, ArrayLike] | None
) -> tuple[
    NDArray[np.float64],
    int,
    NDArray[np.intp],
    NDArray[np.intp],
    NDArray[np.float64],
    NDArray[np.float64],
]:
    """Features, best policy, pairs (rows, cols), differences z and win probabilities σ(θᵀz)."""
    x = np.asarray(features, float)
    th = np.asarray(theta, float)
    best = best_policy(x, th)
    rows, cols = _pairs_or_all(x.shape[0], pairs)
    z = x[rows] - x[cols]
    return x, best, rows, cols, z, expit(z @ th)


def _binary_entropy(p: NDArray[np.float64]) -> NDArray[np.float64]:
    return -(p * np.log(p) + (1.0 - p) * np.log1p(-p))


def optimal_allocation_exact(
    features: ArrayLike,
    theta: ArrayLike,
    pairs: tuple[ArrayLike, ArrayLike] | None = None,
    entropy: float = 0.0,
) -> StructuredAllocation:
    """T*(θ) and w* from the exact program of docs/structured.md (exponential cone, cvxpy +
    Clarabel).

    T*(θ)⁻¹ = max_{w∈Δ} min_{j≠i*} inf_{λ: λᵀ(x_j − x_{i*}) ≥ 0} Σ_ab w_ab d(s_ab, σ(λᵀz_ab)).
    The inner infimum is a weighted logistic regression with soft labels s_ab; its Lagrange dual
    (the conjugate of u ↦ log(1 + eᵘ) is the negative binary entropy) is
    max_{0≤v≤w, ν≥0} Σ_ab [w_ab h(v_ab/w_ab) − w_ab h(s_ab)] subject to
    Σ_ab (v_ab − w_ab s_ab) z_ab = ν (x_j − x_{i*}), and w·h(v/w) = −rel_entr(v, w) −
    rel_entr(w − v, w) is jointly concave. The reference for the tests; ~0.1 s at K = 10 but it
    grows as K³ (one copy of the pair variables per rival).

    Parameters
    ----------
    features : array_like
        K × d feature matrix.
    theta : array_like
        True parameter (d,); the best policy must be unique.
    pairs : (rows, cols), optional
        The pairs allowed weight; all K(K−1)/2 by default.
    entropy : float
        η ≥ 0 of docs/structured.md entropy regularizer: maximize min_j f_j(w) + η·Σ_ab w_ab
        log(1/w_ab) instead (``cp.entr``, exponential cone). Strictly concave, so w* is unique and
        continuous in θ (what tracking needs). ``t_star`` is then 1/min_j f_j(w_η), the
        characteristic time of the regularized allocation (≥ the unregularized T*). The cost is not
        scale-free: 1/T_η ≥ 1/T* − η·log P, so η = 1e-3 costs ~1% where T* is a few hundred (BT5:
        266.7 → 269.8) but much more where T* is large (a K = 5, d = 2 instance: 517 → 988); choose
        η ≪ 1/(T*·log P).

    Returns
    -------
    StructuredAllocation
    """
    x, best, rows, cols, z, s = _allocation_problem(features, theta, pairs)
    regularization = entropy
    binary_entropy = _binary_entropy(s)
    import cvxpy as cp  # imported here: ~0.5 s that only these two solvers need

    w = cp.Variable(rows.size, nonneg=True)
    t = cp.Variable()
    constraints = [cp.sum(w) == 1]
    for j in range(x.shape[0]):
        if j == best:
            continue
        v = cp.Variable(rows.size)
        nu = cp.Variable(nonneg=True)
        constraints += [
            t <= cp.sum(-cp.rel_entr(v, w) - cp.rel_entr(w - v, w)) - binary_entropy @ w,
            z.T @ (v - cp.multiply(s, w)) == nu * (x[j] - x[best]),
            v >= 0,
            v <= w,
        ]
    objective = t + regularization * cp.sum(cp.entr(w)) if regularization > 0 else t
    cp.Problem(cp.Maximize(objective), constraints).solve(
        solver=cp.CLARABEL, **CLARABEL_OPTIONS
    )
    # Feasible by construction (w = uniform, t = its value), so Clarabel returns a solution or
    # cvxpy raises SolverError; never an empty value.
    assert t.value is not None and w.value is not None
    shares = np.clip(np.asarray(w.value, float), 0.0, None)
    shares /= shares.sum()
    return StructuredAllocation(best, 1.0 / float(t.value), rows, cols, shares, "exact")


def optimal_allocation_fisher(
    features: ArrayLike,
    theta: ArrayLike,
    pairs: tuple[ArrayLike, ArrayLike] | None = None,
    regularization: float = 0.0,
) -> StructuredAllocation:
    """T* and w* from the regularized Fisher (Gaussian) form of docs/structured.md (cvxpy).

    T* ≈ min_{w∈Δ} max_{j≠i*} 2 y_jᵀ(H(w) + ηI)⁻¹y_j / Δ_j², y_j = x_{i*} − x_j, Δ_j = θᵀy_j,
    H(w) = Σ_ab w_ab s_ab(1 − s_ab) z_ab z_abᵀ. It is the exact program with each divergence
    d(s, σ(λᵀz)) replaced by its second-order expansion ½ s(1 − s)((λ − θ)ᵀz)²; η = 0 gives
    the golden values of docs/reference-instances.md (BT5: 269.0), η > 0 keeps H
    invertible for any w.

    Parameters
    ----------
    features, theta, pairs
        As in :func:`optimal_allocation_exact`.
    regularization : float
        η ≥ 0.

    Returns
    -------
    StructuredAllocation
    """
    x, best, rows, cols, z, s = _allocation_problem(features, theta, pairs)
    import cvxpy as cp  # imported here: ~0.5 s that only these two solvers need

    w = cp.Variable(rows.size, nonneg=True)
    t = cp.Variable()
    information = z.T @ cp.diag(cp.multiply(s * (1.0 - s), w)) @ z
    information = information + regularization * np.eye(x.shape[1])
    constraints = [cp.sum(w) == 1]
    for j in range(x.shape[0]):
        if j == best:
            continue
        y = x[best] - x[j]
        gap = float(np.asarray(theta, float) @ y)
        constraints.append(2.0 * cp.matrix_frac(y, information) / gap**2 <= t)
    cp.Problem(cp.Minimize(t), constraints).solve(solver=cp.CLARABEL, **CLARABEL_OPTIONS)
    assert t.value is not None and w.value is not None  # feasible by construction, as above
    shares = np.clip(np.asarray(w.value, float), 0.0, None)
    return StructuredAllocation(best, float(t.value), rows, cols, shares / shares.sum(), "fisher")


# ---- optimal allocation: the fast solver ---------------------------------------------------------
# The fast solver keeps all pairs up to this many; beyond it uses :func:`candidate_pairs`.
MAX_ALL_PAIRS = 5_000
# Golden-section steps of the solver's segment search (the interval shrinks by 0.618 per step).
SEGMENT_SEARCH_STEPS = 12
CUT_PATIENCE = 20
# Rivals that carry the smoothed maximum in one Frank–Wolfe step.
MAX_ACTIVE_RIVALS = 32
# Frank–Wolfe scores every rival once per WATCH_REFRESH steps, and the WATCHED_RIVALS largest at
# every step.
WATCH_REFRESH = 10
WATCHED_RIVALS = 256


def candidate_pairs(
    features: ArrayLike, theta: ArrayLike, n_top: int | None = None
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """The pairs the fast solver may weight: all of them for small K, a structured subset otherwise.

    When K(K−1)/2 ≤ 5,000 every pair is a candidate. Otherwise the set is the union of
    (1) the leader's pairs (i*, j) for every j — always included, so every rival's gap can be
    measured directly, and their differences span R^d when the features are identifiable;
    (2) all pairs among the ``n_top`` policies of highest utility θᵀx (default 2d + 2): the hardest
    rivals, between which indirect comparisons pay off;
    (3) all pairs among the policies that are extreme (argmax and argmin) along each principal
    axis of the centred features, and between them and (2): optimal designs put weight on
    differences that are long in the directions that must be estimated. That makes O(K + d²)
    pairs instead of K²/2.

    Parameters
    ----------
    features : array_like
        K × d feature matrix.
    theta : array_like
        The (estimated) parameter, which decides the leader and the top policies.
    n_top : int, optional
        Number of top policies in (2).

    Returns
    -------
    rows, cols : ndarray of int
        The pairs (a, b) with a < b.
    """
    x = np.asarray(features, float)
    k, d = x.shape
    if k * (k - 1) // 2 <= MAX_ALL_PAIRS:
        return all_pairs(k)
    utilities = x @ np.asarray(theta, float)
    best = int(np.argmax(utilities))
    top = np.argsort(-utilities)[: (2 * d + 2) if n_top is None else n_top]
    _, _, axes = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    projections = x @ axes.T
    extremes = np.unique(np.concatenate([projections.argmax(axis=0), projections.argmin(axis=0)]))
    core = np.unique(np.concatenate([top, extremes]))
    first, second = np.triu_indices(core.size, 1)
    others = np.delete(np.arange(k), best)
    rows = np.concatenate([np.full(others.size, best), core[first]])
    cols = np.concatenate([others, core[second]])
    low, high = np.minimum(rows, cols), np.maximum(rows, cols)
    unique = np.unique(low * k + high)
    return (unique // k).astype(np.intp), (unique % k).astype(np.intp)


def _solve_cut_lp(divergence: NDArray[np.float64]) -> OptimizeResult | None:
    """max_{w∈Δ, t} t s.t. t ≤ wᵀD[:, k] for every cut k (D: pairs × cuts), by HiGHS.

    Dual simplex first, then the interior-point method if HiGHS reports numerical trouble (it
    does on some degenerate programs with many cuts); None if both fail.
    """
    from scipy.optimize import linprog  # imported here: scipy.optimize is slow to import

    n_pairs, n_cuts = divergence.shape
    for method in ("highs-ds", "highs-ipm"):
        result = linprog(
            c=np.concatenate([np.zeros(n_pairs), [-1.0]]),
            A_ub=np.hstack([-divergence.T, np.ones((n_cuts, 1))]),
            b_ub=np.zeros(n_cuts),
            A_eq=np.concatenate([np.ones(n_pairs), [0.0]])[None, :],
            b_eq=[1.0],
            bounds=[(0.0, None)] * n_pairs + [(None, None)],
            method=method,
        )
        if result.status == 0:
            return result
    return None


class AllocationSolver:
    """Accurate solver of max_{w∈Δ} min_{j≠i*} f_j(w): T*(θ) and w*(θ) without cvxpy.

    Why a cutting-plane method. For fixed w, f_j(w) = min_{λ∈Alt_j} Σ_ab w_ab D_ab(λ) with
    Alt_j = {λ : λᵀ(x_j − x_{i*}) ≥ 0} and D_ab(λ) the divergence of pair ab between θ and λ
    (exact: d(s_ab, σ(λᵀz_ab)); Fisher: ½ s_ab(1 − s_ab)((λ − θ)ᵀz_ab)² + (η/2)‖λ − θ‖², the η
    term being η/2‖λ − θ‖²·Σw). So the problem is a zero-sum game between pairs and alternatives
    that is linear in w for each λ: T*⁻¹ = max_w min_{λ ∈ ∪Alt_j} wᵀD(λ). Frank–Wolfe and mirror
    ascent converge slowly on this non-smooth objective (O(1/√n)); here a finite set of
    alternatives λ_k (cuts) and a working set of pairs are grown instead:

    1. solve the linear program max_{w, t} t s.t. t ≤ wᵀD(λ_k) for every cut, w ∈ Δ on the working
       pairs (HiGHS); its value V is an upper bound once no candidate pair has a positive reduced
       cost Σ_k π_k D_ab(λ_k) − V (π: the LP's duals, a mixture of alternatives) — such pairs are
       added first (column generation);
    2. compute every rival's best response λ_j(w) — the gradient of f_j in w_ab is D_ab(λ_j)
       (Danskin) — which gives the lower bound L = min_j f_j(w);
    3. stop when V − L ≤ tolerance·V, otherwise add the most violated rivals' λ_j as cuts.

    This is Kelley's cutting-plane method on the concave, 1-homogeneous F(w) = min_j f_j(w) (the
    cut wᵀD(λ_j) is exact at the current w by Euler's identity), with column generation over
    pairs; it uses only values and supergradients. Warm start: the cuts stay valid alternatives
    whenever θ changes but i* does not (Alt_j depends on i* and j only), so :meth:`solve` keeps
    them and the working pairs; it discards them when i* changes.

    Best responses: Fisher form in closed form, λ_j = θ − (Δ_j / y_jᵀA⁻¹y_j) A⁻¹y_j with
    A = H(w) + ηI, for all rivals at once; exact form by the constrained Newton fit of
    :func:`fit_constrained_mle` with counts w and soft wins w·s, one rival at a time. The LP grows
    with the pairs the optimum uses, so this solver is meant for moderate K (the sampling loop
    uses :func:`fisher_frank_wolfe`).

    Parameters
    ----------
    features : array_like
        K × d feature matrix.
    form : {"fisher", "exact"}
        Which program to solve.
    regularization : float
        η of the Fisher form.
    tolerance : float
        Relative gap (V − L)/V at which to stop.
    max_iterations : int
        Cap on LP solves.
    cuts_per_iteration : int
        Most violated rivals added as cuts per iteration.
    """

    def __init__(
        self,
        features: ArrayLike,
        form: Form = "fisher",
        regularization: float = 0.0,
        tolerance: float = 1e-6,
        max_iterations: int = 1_000,
        cuts_per_iteration: int = 8,
    ) -> None:
        if form not in ("fisher", "exact"):
            raise ConfigError(f"form must be 'fisher' or 'exact', got {form!r}")
        self.features = np.asarray(features, float)
        self.form: Form = form
        self.regularization = regularization
        self.tolerance = tolerance
        self.max_iterations = max_iterations
        self.cuts_per_iteration = cuts_per_iteration
        self._best: int | None = None
        self._cuts = np.zeros((0, self.features.shape[1]))
        self._support: set[tuple[int, int]] = set()
        #: LP solves of the last call (for benchmarks and tests).
        self.iterations = 0

    # divergences D_ab(λ) of the candidate pairs (rows) for each alternative (columns)
    def _divergences(
        self,
        theta: NDArray[np.float64],
        z: NDArray[np.float64],
        s: NDArray[np.float64],
        alternatives: NDArray[np.float64],
    ) -> NDArray[np.float64]:
        if self.form == "exact":
            return np.asarray(kl_bernoulli(s[:, None], expit(z @ alternatives.T)))
        shift = alternatives - theta
        ridge_term = 0.5 * self.regularization * np.sum(shift**2, axis=1)
        return 0.5 * (s * (1.0 - s))[:, None] * (z @ shift.T) ** 2 + ridge_term

    def _best_responses(
        self,
        theta: NDArray[np.float64],
        z: NDArray[np.float64],
        s: NDArray[np.float64],
        weights: NDArray[np.float64],
        best: int,
        rivals: NDArray[np.intp],
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """f_j(w) and the minimizing alternatives λ_j for every rival."""
        used = weights > 0
        zu, wu, su = z[used], weights[used], s[used]
        gaps = self.features[best] - self.features[rivals]  # y_j, rows
        delta = gaps @ theta
        information = fisher_information(theta, zu, wu) + (
            self.regularization + HESSIAN_JITTER
        ) * np.eye(theta.size)
        solved = np.linalg.solve(information, gaps.T)  # A⁻¹ y_j, columns
        quadratic = np.einsum("jd,dj->j", gaps, solved)
        alternatives = theta - (delta / quadratic)[:, None] * solved.T
        if self.form == "fisher":
            return delta**2 / (2.0 * quadratic), alternatives
        values = np.empty(rivals.size)
        for index in range(rivals.size):
            lam = fit_constrained_mle(zu, wu, wu * su, -gaps[index], alternatives[index]).lam
            alternatives[index] = lam
            values[index] = float(wu @ np.asarray(kl_bernoulli(su, expit(zu @ lam))))
        return values, alternatives

    def _segment_search(
        self,
        theta: NDArray[np.float64],
        z: NDArray[np.float64],
        s: NDArray[np.float64],
        best: int,
        rivals: NDArray[np.intp],
        start: NDArray[np.float64],
        end: NDArray[np.float64],
        start_value: float,
    ) -> tuple[float, NDArray[np.float64]]:
        """Golden-section search of the concave F on the segment [start, end]."""
        ratio = (math.sqrt(5.0) - 1.0) / 2.0

        def value_at(alpha: float) -> float:
            weights = (1.0 - alpha) * start + alpha * end
            return float(self._best_responses(theta, z, s, weights, best, rivals)[0].min())

        low, high = 0.0, 1.0
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        value_left, value_right = value_at(left), value_at(right)
        for _ in range(SEGMENT_SEARCH_STEPS):
            if value_left >= value_right:
                high, right, value_right = right, left, value_left
                left = high - ratio * (high - low)
                value_left = value_at(left)
            else:
                low, left, value_left = left, right, value_right
                right = low + ratio * (high - low)
                value_right = value_at(right)
        alpha, value = (left, value_left) if value_left >= value_right else (right, value_right)
        if value <= start_value:
            return start_value, start
        return value, (1.0 - alpha) * start + alpha * end

    def solve(
        self,
        theta: ArrayLike,
        pairs: tuple[ArrayLike, ArrayLike] | None = None,
        best: int | None = None,
    ) -> StructuredAllocation:
        """T*(θ) and w*(θ) over the given pairs (default: :func:`candidate_pairs`).

        Parameters
        ----------
        theta : array_like
            The parameter (true, or the current estimate).
        pairs : (rows, cols), optional
            Candidate pairs; the leader's pairs should be among them.
        best : int, optional
            The policy to certify; argmax θᵀx (required unique) by default. An estimate may tie
            it with a rival, and then T* = ∞ (the LP weights are still returned).

        Returns
        -------
        StructuredAllocation
            With ``t_star = 1/L`` for the best lower bound L found, and w the LP solution at it.
        """
        th = np.asarray(theta, float)
        x = self.features
        if best is None:
            best = best_policy(x, th)
        rows, cols = candidate_pairs(x, th) if pairs is None else _pairs_or_all(x.shape[0], pairs)
        z = x[rows] - x[cols]
        s = expit(z @ th)
        rivals = np.delete(np.arange(x.shape[0]), best)
        index = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(rows, cols, strict=True))}

        if best != self._best:
            self._best, self._cuts, self._support = best, np.zeros((0, th.size)), set()
        working = sorted(index[p] for p in self._support if p in index)
        if not working:  # start from the leader's pairs, whose differences span R^d
            working = [k for k in range(rows.size) if best in (rows[k], cols[k])]
        working_set = set(working)

        weights = np.zeros(rows.size)
        weights[working] = 1.0 / len(working)
        values, alternatives = self._best_responses(th, z, s, weights, best, rivals)
        best_lower, best_weights = float(values.min()), weights.copy()
        cuts = np.vstack([self._cuts, alternatives[np.argsort(values)[: self.cuts_per_iteration]]])

        idle = np.zeros(cuts.shape[0], dtype=int)  # LP solves since each cut last had weight
        mixture = np.zeros(0)
        self.iterations = 0
        while self.iterations < self.max_iterations:
            self.iterations += 1
            columns = np.array(working)
            divergence = self._divergences(th, z[columns], s[columns], cuts)  # pairs × cuts
            n_cols = columns.size
            result = _solve_cut_lp(divergence)
            if result is None:  # HiGHS failed with every method: keep the best point so far
                break
            upper = -float(result.fun)
            mixture = -np.asarray(result.ineqlin.marginals)  # π ≥ 0, sums to 1
            idle = np.where(mixture > 0, 0, idle + 1)
            # Column generation: candidate pairs that the LP's mixture of alternatives prices
            # above V would raise the value.
            active = mixture > 0
            priced = self._divergences(th, z, s, cuts[active]) @ mixture[active]
            priced[columns] = -np.inf
            entering = np.flatnonzero(priced > upper * (1.0 + 1e-9))
            if entering.size:
                entering = entering[np.argsort(-priced[entering])[: self.cuts_per_iteration]]
                working.extend(int(k) for k in entering)
                working_set.update(int(k) for k in entering)
                continue
            weights = np.zeros(rows.size)
            weights[columns] = np.clip(result.x[:n_cols], 0.0, None)
            weights /= weights.sum()
            values, alternatives = self._best_responses(th, z, s, weights, best, rivals)
            if float(values.min()) > best_lower:
                best_lower, best_weights = float(values.min()), weights
            else:
                # LP solutions are vertices while w* is often in the interior of a face, so the
                # lower bound also searches the segment from the best point so far to the new one.
                best_lower, best_weights = self._segment_search(
                    th, z, s, best, rivals, best_weights, weights, best_lower
                )
            if upper - best_lower <= self.tolerance * upper:
                break
            violated = np.argsort(values)[: self.cuts_per_iteration]
            violated = violated[values[violated] < upper]
            # Cuts unused by the last CUT_PATIENCE programs are dropped: that keeps the LP small
            # (its solve time dominates) and barely slows convergence.
            keep = idle < CUT_PATIENCE
            cuts = np.vstack([cuts[keep], alternatives[violated]])
            idle = np.concatenate([idle[keep], np.zeros(violated.size, dtype=int)])

        # Keep the cuts the LP used and the pairs with weight, for the next (warm) call.
        self._cuts = cuts[mixture > 0] if mixture.size == cuts.shape[0] else cuts
        self._support = {(int(rows[k]), int(cols[k])) for k in np.flatnonzero(best_weights > 0)}
        t_star = 1.0 / best_lower if best_lower > 0 else math.inf
        return StructuredAllocation(best, t_star, rows, cols, best_weights, self.form)


def fisher_frank_wolfe(
    features: ArrayLike,
    theta: ArrayLike,
    pairs: tuple[ArrayLike, ArrayLike],
    best: int,
    start: ArrayLike | None = None,
    start_age: int = 0,
    iterations: int = 200,
    regularization: float = 1e-3,
    smoothing: float = 0.01,
    margin: float = 0.0,
) -> StructuredAllocation:
    """Frank–Wolfe on the Fisher form: a cheap, warm-startable w*(θ) for the sampling loop.

    Minimizes G(w) = max_j 2 y_jᵀA(w)⁻¹y_j / Δ_j², A(w) = Σ_ab w_ab s_ab(1 − s_ab) z_ab z_abᵀ + ηI,
    over the simplex on the given pairs, as in the optimal-design algorithms for linear bandits
    (Fiez, Jain, Jamieson & Ratliff 2019, "Sequential experimental design for transductive linear
    bandits", §4). The max over rivals is smoothed by softmax weights π_j ∝ exp((g_j − max g) /
    (smoothing · max g)), so the direction is the pair maximizing
    Σ_j π_j s_ab(1 − s_ab)(z_abᵀA⁻¹y_j)²/Δ_j² (minus the partial derivative), and the step is
    1/(k + 2) at iteration k (counted from the warm start's age). Each iteration costs a rank-one
    update of A, one d×d solve for all rivals, and O(P·d·m) for P pairs and the m ≤ 32 rivals of
    largest softmax weight, so it scales to K = 10,000 with a candidate pair set. Accuracy is that
    of a first-order method (≈1% after a few hundred iterations); :class:`AllocationSolver` is the
    accurate solver.

    Parameters
    ----------
    features : array_like
        K × d feature matrix.
    theta : array_like
        Parameter (true or estimated).
    pairs : (rows, cols)
        Candidate pairs; they must include pairs whose differences span R^d (e.g. the leader's).
    best : int
        The policy to certify.
    start : array_like, optional
        Warm start: weights on ``pairs`` (uniform by default).
    start_age : int
        Frank–Wolfe steps already behind the warm start (so its first steps are small).
    iterations : int
        Frank–Wolfe steps.
    regularization : float
        η > 0, so that A(w) is invertible at every vertex.
    smoothing : float
        Relative temperature of the softmax over rivals.
    margin : float
        γ ≥ 0 added to every gap Δ_j (ε-optimal identification: the alternatives are
        λᵀ(x_j − x_best) ≥ γ).

    Returns
    -------
    StructuredAllocation
        ``t_star`` is G(w) at the returned w (an upper bound on the Fisher-form T*).
    """
    x = np.asarray(features, float)
    th = np.asarray(theta, float)
    rows, cols = np.asarray(pairs[0], dtype=np.intp), np.asarray(pairs[1], dtype=np.intp)
    z = x[rows] - x[cols]
    p = expit(z @ th)
    curvature = p * (1.0 - p)
    rivals = np.delete(np.arange(x.shape[0]), best)
    gaps = x[best] - x[rivals]
    gap_values = gaps @ th + margin
    scale = 2.0 / np.maximum(gap_values, 1e-12) ** 2
    if start is None:
        weights = np.full(rows.size, 1.0 / rows.size)
    else:
        weights = np.asarray(start, float).copy()
        weights /= weights.sum()
    ridge = regularization * np.eye(x.shape[1])
    information = (z.T * (weights * curvature)) @ z + ridge

    def objective(
        matrix: NDArray[np.float64], subset: NDArray[np.intp]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        # A is d × d: its inverse times the gaps beats a solve with up to K right-hand sides.
        chosen = gaps[subset]
        solved = np.linalg.inv(matrix) @ chosen.T  # A⁻¹ y_j, columns
        return scale[subset] * np.einsum("dj,dj->j", chosen.T, solved), solved

    everyone = np.arange(rivals.size)
    watched = everyone
    for step in range(start_age, start_age + iterations):
        # All rivals are scored every WATCH_REFRESH steps; in between only the WATCHED_RIVALS
        # largest, since the maximum moves slowly (this keeps a step O(P·d·m) at K = 10,000).
        if (step - start_age) % WATCH_REFRESH == 0 and rivals.size > WATCHED_RIVALS:
            values, _ = objective(information, everyone)
            watched = np.argpartition(-values, WATCHED_RIVALS - 1)[:WATCHED_RIVALS]
        values, solved = objective(information, watched)
        top = values.max()
        # The MAX_ACTIVE_RIVALS largest values carry the softmax; the rest is negligible.
        active = np.argpartition(-values, min(MAX_ACTIVE_RIVALS, values.size) - 1)[
            :MAX_ACTIVE_RIVALS
        ]
        softmax = np.exp((values[active] - top) / (smoothing * top))
        softmax /= softmax.sum()
        projections = z @ solved[:, active]  # z_abᵀA⁻¹y_j
        gain = curvature * ((projections**2) @ (softmax * scale[watched[active]]))
        vertex = int(np.argmax(gain))
        size = 1.0 / (step + 2.0)
        weights *= 1.0 - size
        weights[vertex] += size
        information = (1.0 - size) * (information - ridge) + ridge
        information += size * curvature[vertex] * np.outer(z[vertex], z[vertex])
    values, _ = objective(information, everyone)
    return StructuredAllocation(best, float(values.max()), rows, cols, weights, "fisher")


# Up to this many policies the exact form is solved accurately; beyond, Frank–Wolfe on the Fisher
# form (the cutting-plane LP grows with the pairs the optimum uses).
MAX_POLICIES_EXACT = 30


def characteristic_time(features: ArrayLike, theta: ArrayLike) -> StructuredAllocation:
    """T*(θ) and w*(θ) by the most accurate affordable method, for reports and simulations.

    K ≤ 30: the exact form by :class:`AllocationSolver` (relative gap 1e-5). Larger K: the Fisher
    form (η = 1e-3, within ~1% of exact on the reference instances) by 1,000 Frank–Wolfe steps on
    :func:`candidate_pairs` — an approximation (≈1%), flagged by ``form == "fisher"``.
    """
    x = np.asarray(features, float)
    th = np.asarray(theta, float)
    if x.shape[0] <= MAX_POLICIES_EXACT:
        return AllocationSolver(x, form="exact", tolerance=1e-5).solve(th)
    best = best_policy(x, th)
    return fisher_frank_wolfe(x, th, candidate_pairs(x, th), best, iterations=1000)
