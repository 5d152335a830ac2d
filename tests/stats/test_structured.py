"""Structured (Bradley–Terry with features) statistics: likelihood, fits, T*(θ), fast solver."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit

from llmpo.stats.structured import (
    AllocationSolver,
    all_pairs,
    candidate_pairs,
    fisher_frank_wolfe,
    fit_constrained_mle,
    fit_mle,
    log_likelihood,
    log_likelihood_gradient,
    log_likelihood_hessian,
    optimal_allocation_exact,
    optimal_allocation_fisher,
)


def one_hot(utilities: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Free BT utilities as features: d = K − 1, the last policy's utility fixed to 0."""
    u = np.asarray(utilities, float)
    k = u.size
    return np.eye(k)[:, : k - 1], u[: k - 1] - u[-1]


def feat10() -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).normal(size=(10, 3))
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.array([1.0, 0.5, -0.3])


def random_stats(seed: int, m: int = 12, d: int = 4):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(m, d))
    n = rng.integers(1, 20, size=m).astype(float)
    s = np.round(rng.uniform(0, 1, size=m) * n * 2) / 2  # half-integers: ties count ½
    return z, n, s, rng.normal(size=d)


# ---- likelihood ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
def test_gradient_and_hessian_match_finite_differences(seed):
    z, n, s, theta = random_stats(seed)
    step = 1e-6
    eye = np.eye(theta.size)
    numeric_gradient = np.array([
        (log_likelihood(theta + step * e, z, n, s) - log_likelihood(theta - step * e, z, n, s))
        / (2 * step)
        for e in eye
    ])
    np.testing.assert_allclose(log_likelihood_gradient(theta, z, n, s), numeric_gradient, rtol=1e-6)
    numeric_hessian = np.array([
        (log_likelihood_gradient(theta + step * e, z, n, s)
         - log_likelihood_gradient(theta - step * e, z, n, s)) / (2 * step)
        for e in eye
    ])
    np.testing.assert_allclose(
        log_likelihood_hessian(theta, z, n, s), numeric_hessian, rtol=1e-5, atol=1e-6
    )


def test_log_likelihood_is_the_bernoulli_log_likelihood():
    z = np.array([[1.0, 0.0], [0.5, -1.0]])
    theta = np.array([0.3, 0.7])
    p = expit(z @ theta)
    n, s = np.array([3.0, 2.0]), np.array([2.0, 0.5])
    expected = np.sum(s * np.log(p) + (n - s) * np.log(1 - p))
    assert log_likelihood(theta, z, n, s) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_mle_matches_a_generic_optimizer(seed):
    z, n, s, _ = random_stats(seed)
    ridge = 0.5
    theta = fit_mle(z, n, s, ridge=ridge)

    def objective(t):
        return -log_likelihood(t, z, n, s) + 0.5 * ridge * t @ t

    reference = minimize(objective, np.zeros(z.shape[1]), method="BFGS", options={"gtol": 1e-10})
    np.testing.assert_allclose(theta, reference.x, atol=1e-5)


def test_constrained_mle_lies_on_the_hyperplane_and_is_optimal():
    z, n, s, _ = random_stats(7)
    direction = np.array([1.0, -1.0, 0.5, 0.0])
    fit = fit_constrained_mle(z, n, s, direction)
    lam, value = fit.lam, fit.log_likelihood
    assert fit.converged
    assert lam @ direction == pytest.approx(0.0, abs=1e-10)
    assert value == pytest.approx(log_likelihood(lam, z, n, s))
    # The gradient at the optimum is normal to the hyperplane (Newton stops at a decrement of
    # 1e-10, i.e. a gradient of order √(1e-10·‖H‖)).
    gradient = log_likelihood_gradient(lam, z, n, s)
    unit = direction / np.linalg.norm(direction)
    assert np.linalg.norm(gradient - (gradient @ unit) * unit) < 1e-3
    assert value <= log_likelihood(fit_mle(z, n, s), z, n, s) + 1e-9


def test_constrained_mle_on_a_shifted_hyperplane_is_optimal():
    # λᵀy = c (the ε-optimal alternative): on the hyperplane, and no better point on it.
    z, n, s, _ = random_stats(8)
    direction = np.array([0.5, -1.0, 0.0, 1.0])
    fit = fit_constrained_mle(z, n, s, direction, level=0.3)
    assert fit.converged
    assert fit.lam @ direction == pytest.approx(0.3, abs=1e-10)
    basis = np.linalg.svd(direction[None, :])[2][1:]
    anchor = 0.3 * direction / (direction @ direction)
    reference = minimize(
        lambda mu: -log_likelihood(anchor + mu @ basis, z, n, s), np.zeros(3), method="BFGS",
        options={"gtol": 1e-10},
    )
    assert fit.log_likelihood == pytest.approx(-reference.fun, abs=1e-7)


def test_constrained_fit_with_one_hot_features_merges_two_utilities():
    # Three policies, one-hot with the last utility 0: tying policies 0 and 1 is a BT fit in
    # which they share one utility.
    x, _ = one_hot([0.0, 0.0, 0.0])
    rows, cols = all_pairs(3)
    z = x[rows] - x[cols]
    n = np.array([10.0, 10.0, 10.0])
    s = np.array([7.0, 8.0, 6.0])
    fit = fit_constrained_mle(z, n, s, x[1] - x[0])
    lam, value = fit.lam, fit.log_likelihood
    assert lam[0] == pytest.approx(lam[1], abs=1e-10)
    # Merged: policy "01" vs 2 has 8 + 6 = 14 wins out of 20 (the 0-vs-1 pair is 7 of 10).
    merged = np.log(14 / 6)
    assert lam[0] == pytest.approx(merged, abs=1e-6)
    assert value == pytest.approx(
        7 * np.log(0.5) + 3 * np.log(0.5) + 14 * np.log(0.7) + 6 * np.log(0.3), abs=1e-9
    )


# ---- golden values (docs/reference-instances.md) -----------------------------------------
GOLDEN = [
    ("BT5", [1, 0.8, 0.6, 0.4, 0.2], 266.7, 269.0),
    ("BT4", [0.5, 0.3, 0.25, 0.0], 332.1, None),
    ("BT10", [1 - i / 9 for i in range(10)], 906.2, None),
]


@pytest.mark.parametrize(("name", "utilities", "exact", "fisher"), GOLDEN)
def test_golden_bradley_terry_values(name, utilities, exact, fisher):
    x, theta = one_hot(utilities)
    allocation = optimal_allocation_exact(x, theta)
    assert allocation.best == 0
    assert allocation.t_star == pytest.approx(exact, rel=5e-4), name
    if fisher is not None:
        assert optimal_allocation_fisher(x, theta).t_star == pytest.approx(fisher, rel=5e-4)


def test_golden_feat10():
    x, theta = feat10()
    exact = optimal_allocation_exact(x, theta)
    assert exact.best == 2
    assert exact.t_star == pytest.approx(127.4, rel=5e-4)
    assert optimal_allocation_fisher(x, theta).t_star == pytest.approx(129.1, rel=5e-4)
    # docs/structured.md: the optimum need not involve i*; here most weight is on the pair (6, 8).
    a, b, share = exact.support()[0]
    assert (a, b) == (6, 8) and share > 0.6


@pytest.mark.parametrize("form", ["exact", "fisher"])
def test_fast_solver_reproduces_the_golden_values(form):
    for _, utilities, exact, fisher in GOLDEN[:2]:
        x, theta = one_hot(utilities)
        t_star = AllocationSolver(x, form=form, tolerance=1e-5).solve(theta).t_star
        expected = exact if form == "exact" else fisher
        if expected is not None:
            assert t_star == pytest.approx(expected, rel=5e-4)
    x, theta = feat10()
    solution = AllocationSolver(x, form=form, tolerance=1e-5).solve(theta)
    assert solution.best == 2
    assert solution.t_star == pytest.approx(127.4 if form == "exact" else 129.1, rel=5e-4)


def test_one_hot_structured_bound_is_the_free_bradley_terry_bound():
    """With one-hot features the program is BT with free utilities: check T* and w* against a
    direct numerical solution of max_w min_j min_{u: u_j ≥ u_0} Σ w_ab d(p_ab, σ(u_a − u_b))."""
    utilities = np.array([0.5, 0.3, 0.25, 0.0])
    x, theta = one_hot(list(utilities))
    allocation = optimal_allocation_exact(x, theta)
    rows, cols = all_pairs(4)
    p = expit(utilities[rows] - utilities[cols])

    def kl(a, b):
        return a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))

    def inner(w):
        # Free utilities, the last fixed to 0; the alternative u_j = u_0 is a 2-parameter fit.
        values = []
        for j in (1, 2, 3):
            def divergence(free, j=j):
                u = np.zeros(4)
                others = [k for k in (1, 2, 3) if k != j]
                u[0] = u[j] = free[0]
                u[others[0]] = free[1] if others[0] != 3 else 0.0
                if len(others) > 1:
                    u[others[1]] = free[2] if others[1] != 3 else 0.0
                if j == 3:
                    u[0] = u[3] = 0.0
                return w @ kl(p, expit(u[rows] - u[cols]))
            values.append(minimize(divergence, np.zeros(3), method="Nelder-Mead",
                                   options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20000}).fun)
        return min(values)

    direct = 1 / inner(allocation.shares)
    assert direct == pytest.approx(allocation.t_star, rel=1e-4)
    # No other allocation does better: random perturbations of w* only lose.
    rng = np.random.default_rng(1)
    for _ in range(5):
        other = np.abs(allocation.shares + rng.normal(scale=0.05, size=allocation.shares.size))
        assert 1 / inner(other / other.sum()) >= allocation.t_star * (1 - 1e-6)


def random_instance(seed: int, max_policies: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(4, max_policies + 1))
    d = int(rng.integers(2, min(8, k - 1) + 1))
    x = rng.normal(size=(k, d))
    while True:  # near-ties make T* huge and both solvers ill-conditioned; keep a clear winner
        theta = rng.normal(size=d) * rng.uniform(0.3, 1.5) / np.sqrt(d)
        top_two = np.sort(x @ theta)[-2:]
        if top_two[1] - top_two[0] > 0.1:
            return x, theta


def compare_with_cvxpy(seed: int, form: str) -> None:
    # Clarabel's exponential-cone solution becomes inaccurate beyond K ≈ 15 (it warns "may be
    # inaccurate"; at K = 26 its w is 1.5e-3 worse than the fast solver's, whose upper bound
    # certifies the latter), so the exact form is compared up to K = 15, the Fisher form to 30.
    x, theta = random_instance(seed, 15 if form == "exact" else 30)
    if form == "exact":
        reference = optimal_allocation_exact(x, theta)
    else:
        reference = optimal_allocation_fisher(x, theta, regularization=1e-3)
    solver = AllocationSolver(x, form=form, regularization=1e-3, tolerance=2e-5)
    assert solver.solve(theta).t_star == pytest.approx(reference.t_star, rel=1e-4), (seed, x.shape)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("form", ["exact", "fisher"])
def test_fast_solver_agrees_with_cvxpy(seed, form):
    compare_with_cvxpy(seed, form)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4, 24))
@pytest.mark.parametrize("form", ["exact", "fisher"])
def test_fast_solver_agrees_with_cvxpy_on_many_instances(seed, form):
    compare_with_cvxpy(seed, form)


def test_solver_warm_start_keeps_its_answer():
    x, theta = feat10()
    solver = AllocationSolver(x, tolerance=1e-4)
    first = solver.solve(theta)
    second = solver.solve(theta * 1.01)
    assert second.t_star == pytest.approx(first.t_star / 1.01**2, rel=0.05)


def test_candidate_pairs_contain_every_pair_of_the_leader():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    theta = rng.normal(size=5)
    rows, cols = candidate_pairs(x, theta)
    best = int(np.argmax(x @ theta))
    leader_pairs = (rows == best) | (cols == best)
    assert leader_pairs.sum() == 399
    assert rows.size < 400 * 399 // 2 // 20
    assert np.all(rows < cols)


@pytest.mark.parametrize("seed", range(3))
def test_frank_wolfe_is_within_two_percent_of_the_accurate_solver(seed):
    x, theta = random_instance(seed, 30)
    pairs = all_pairs(x.shape[0])
    accurate = AllocationSolver(x, form="fisher", regularization=1e-3, tolerance=1e-4).solve(theta)
    first_order = fisher_frank_wolfe(x, theta, pairs, accurate.best, iterations=1000)
    assert accurate.t_star <= first_order.t_star * (1 + 1e-6)  # FW's value is attained by its w
    assert first_order.t_star == pytest.approx(accurate.t_star, rel=0.02)
    warm = fisher_frank_wolfe(x, theta, pairs, accurate.best, first_order.shares, 1000, 200)
    assert warm.t_star <= first_order.t_star * 1.001


# ---- entropy-regularized allocation ------------------------------------------------------------
def _regularized_by_scipy(features, theta, eta):
    """max_w min_j f_j(w) + η Σ w log(1/w) by SLSQP on the epigraph form, with f_j(w) from exact
    constrained fits (each f_j is concave with supergradient KL_ab(λ_j) by Danskin's theorem)."""
    from llmpo.stats.bernoulli import kl_bernoulli

    x = np.asarray(features, float)
    rows, cols = all_pairs(x.shape[0])
    z = x[rows] - x[cols]
    s = expit(z @ theta)
    best = int(np.argmax(x @ theta))
    rivals = [j for j in range(x.shape[0]) if j != best]

    def responses(w):
        values, gradients = [], []
        for j in rivals:
            lam = fit_constrained_mle(z, w, w * s, x[j] - x[best], start=theta).lam
            divergence = np.asarray(kl_bernoulli(s, expit(z @ lam)))
            values.append(float(w @ divergence))
            gradients.append(divergence)
        return np.array(values), np.array(gradients)

    p = rows.size

    def objective(v):  # v = (w, t); minimize −t − ηH(w)
        w = v[:p]
        return -v[p] + eta * float(w @ np.log(w))

    def objective_gradient(v):
        return np.concatenate([eta * (np.log(v[:p]) + 1.0), [-1.0]])

    constraints = [
        {"type": "eq", "fun": lambda v: v[:p].sum() - 1.0,
         "jac": lambda v: np.concatenate([np.ones(p), [0.0]])},
        {"type": "ineq", "fun": lambda v: responses(v[:p])[0] - v[p],
         "jac": lambda v: np.hstack([responses(v[:p])[1], -np.ones((len(rivals), 1))])},
    ]
    start = np.concatenate([np.full(p, 1.0 / p), [0.0]])
    result = minimize(
        objective, start, jac=objective_gradient, constraints=constraints, method="SLSQP",
        bounds=[(1e-10, 1.0)] * p + [(None, None)], options={"ftol": 1e-14, "maxiter": 500},
    )
    w = result.x[:p] / result.x[:p].sum()
    return -result.fun, w, 1.0 / responses(w)[0].min()


@pytest.mark.parametrize(
    ("features", "theta"),
    [
        one_hot([0.5, 0.3, 0.25, 0.0]),  # BT4
        (np.random.default_rng(1).normal(size=(5, 2)), np.array([1.0, -0.4])),
    ],
    ids=["BT4", "K5-d2"],
)
@pytest.mark.parametrize("eta", [1e-3, 1e-2])
def test_entropy_regularized_allocation_matches_a_direct_optimization(features, theta, eta):
    allocation = optimal_allocation_exact(features, theta, entropy=eta)
    value, shares, t_star = _regularized_by_scipy(features, theta, eta)
    entropy = -float(allocation.shares @ np.log(allocation.shares))
    assert 1.0 / allocation.t_star + eta * entropy == pytest.approx(value, rel=1e-5)
    np.testing.assert_allclose(allocation.shares, shares, atol=2e-3)
    assert allocation.t_star == pytest.approx(t_star, rel=1e-4)
    # The cost in T*: F(w_η) ≥ F(w*) − η·(H(w_η) − H(w*)) ≥ F(w*) − η·log P (F = 1/T), and w_η
    # has full support.
    plain = optimal_allocation_exact(features, theta)
    assert plain.t_star <= allocation.t_star * (1 + 1e-6)
    bound = 1.0 / (1.0 / plain.t_star - eta * np.log(allocation.shares.size))
    assert bound < 0 or allocation.t_star <= bound * (1 + 1e-6)
    assert np.all(allocation.shares > 0)
