"""Closed forms of docs/statistics.md against the golden values of docs/reference-instances.md and
brute-force LPs."""

import numpy as np
import pytest
from scipy.optimize import linprog, minimize

from llmpo.harness.reference import reference_instance
from llmpo.stats.bernoulli import kl_bernoulli, kl_confidence
from llmpo.stats.unstructured import (
    best_witnesses,
    condorcet_winner,
    empirical_leader,
    glr_class_a,
    glr_class_b,
    optimal_allocation,
    pair_information,
)

# name: (T*_A, T*_B, w* on (0, j) for class A or None); values and digits as in
# docs/reference-instances.md.
GOLDEN = {
    "BT5": (288.7, 288.7, (0.696, 0.177, 0.080, 0.047)),
    "BT4": (363.0, 363.0, (0.554, 0.355, 0.091)),
    "BT10": (1006.8, 1006.8, None),
    "AB4": (599.0, 205.1, None),
    "CYC4": (149.0, 15.6, None),
}


def _digits(value: float) -> float:
    """Half a unit in the last digit written in the table."""
    text = f"{value}"
    decimals = len(text.split(".")[1]) if "." in text else 0
    return 0.5 * 10.0**-decimals


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_values(name):
    t_a, t_b, shares = GOLDEN[name]
    matrix = reference_instance(name).win_prob
    class_a = optimal_allocation(matrix)
    class_b = optimal_allocation(matrix, assume_condorcet=True)
    assert class_a.best == class_b.best == 0
    assert abs(class_a.t_star - t_a) <= _digits(t_a)
    assert abs(class_b.t_star - t_b) <= _digits(t_b)
    if shares is not None:
        for j, share in enumerate(shares, start=1):
            assert abs(class_a.proportions[0, j] - share) <= _digits(share)
    for allocation in (class_a, class_b):
        upper = np.triu(allocation.proportions, 1)
        assert upper.sum() == pytest.approx(1.0)
        np.testing.assert_array_equal(allocation.proportions, allocation.proportions.T)
    assert class_a.lower_bound(0.01) == pytest.approx(class_a.t_star * kl_confidence(0.01))


def test_class_b_witnesses_on_the_cycle():
    matrix = reference_instance("CYC4").win_prob
    # Rival 1 is beaten hardest by 3, rival 2 by 1, rival 3 by 2.
    assert list(best_witnesses(matrix)[1:]) == [3, 1, 2]
    shares = optimal_allocation(matrix, assume_condorcet=True).proportions
    assert shares[3, 1] == pytest.approx(1 / 3) and shares[0, 1] == 0.0


def random_condorcet_matrix(rng: np.random.Generator, n_policies: int) -> np.ndarray:
    """A random preference matrix whose policy `winner` beats every other."""
    matrix = np.full((n_policies, n_policies), 0.5)
    for a in range(n_policies):
        for b in range(a + 1, n_policies):
            matrix[a, b] = rng.uniform(0.05, 0.95)
            matrix[b, a] = 1 - matrix[a, b]
    winner = rng.integers(n_policies)
    for k in range(n_policies):
        if k != winner:
            matrix[winner, k] = rng.uniform(0.52, 0.95)
            matrix[k, winner] = 1 - matrix[winner, k]
    return matrix


def brute_force_max_min(
    matrix: np.ndarray, class_b: bool, cost_of=None
) -> tuple[float, np.ndarray]:
    """max_w min_{alternatives} Σ_pairs w_ab · cost_ab as an LP over ALL pairs.

    Class A alternatives: i* loses its Condorcet status against rival k: only pair (i*, k) moves,
    to ½. Class B alternatives: rival j becomes a Condorcet winner: every pair (k, j) with
    p_kj > ½ moves to ½. ``cost_of(k, j)`` is the cost of moving pair (k, j) (default
    d(p_kj, ½)).
    """
    if cost_of is None:

        def cost_of(k, j):
            return kl_bernoulli(matrix[k, j], 0.5)

    n_policies = matrix.shape[0]
    best = condorcet_winner(matrix)
    pairs = [(a, b) for a in range(n_policies) for b in range(a + 1, n_policies)]
    rows = []
    for j in range(n_policies):
        if j == best:
            continue
        cost = np.zeros(len(pairs))
        for index, (a, b) in enumerate(pairs):
            if class_b and j in (a, b):
                k = b if a == j else a
                if matrix[k, j] > 0.5:
                    cost[index] = cost_of(k, j)
            elif not class_b and {a, b} == {best, j}:
                cost[index] = cost_of(best, j)
        rows.append(np.concatenate([-cost, [1.0]]))  # t − Σ w·cost ≤ 0
    objective = np.zeros(len(pairs) + 1)
    objective[-1] = -1.0
    solution = linprog(
        objective,
        A_ub=np.array(rows),
        b_ub=np.zeros(len(rows)),
        A_eq=np.concatenate([np.ones(len(pairs)), [0.0]])[None, :],
        b_eq=[1.0],
        bounds=[(0, None)] * len(pairs) + [(None, None)],
        method="highs",
        options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10},
    )
    assert solution.status == 0
    shares = np.zeros((n_policies, n_policies))
    for index, (a, b) in enumerate(pairs):
        shares[a, b] = shares[b, a] = solution.x[index]
    return 1.0 / solution.x[-1], shares


@pytest.mark.parametrize("class_b", [False, True], ids=["class-A", "class-B"])
def test_closed_form_equals_linear_program(class_b):
    rng = np.random.default_rng(2026)
    for _ in range(50):
        matrix = random_condorcet_matrix(rng, int(rng.integers(3, 9)))
        closed = optimal_allocation(matrix, assume_condorcet=class_b)
        t_star, shares = brute_force_max_min(matrix, class_b)
        assert closed.t_star == pytest.approx(t_star, rel=1e-6)
        np.testing.assert_allclose(closed.proportions, shares, atol=1e-6)


def trinomial_cost(win: float, tie: float, loss: float) -> float:
    """inf KL((win, tie, loss) ‖ (w', t', l')) over laws with w' ≤ l', by numerical search.

    Brute force over the whole alternative set (tie probability free), not the closed form.
    """

    def kl(x):
        w, lose = x
        q = np.array([w, 1.0 - w - lose, lose])
        p = np.array([win, tie, loss])
        q = np.clip(q, 1e-15, 1.0)
        return float(np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0) / q), 0.0)))

    best = np.inf
    for start in ((0.3, 0.3), (0.1, 0.6), (loss / 2 + win / 2 - 0.01, loss / 2 + win / 2)):
        result = minimize(
            kl,
            start,
            method="SLSQP",
            bounds=[(1e-12, 1.0), (1e-12, 1.0)],
            constraints=[
                {"type": "ineq", "fun": lambda x: x[1] - x[0]},  # w' ≤ l'
                {"type": "ineq", "fun": lambda x: 1.0 - x[0] - x[1]},
            ],
            options={"ftol": 1e-15, "maxiter": 500},
        )
        best = min(best, result.fun)
    return best


def random_ties(rng: np.random.Generator, matrix: np.ndarray) -> np.ndarray:
    """Random symmetric tie probabilities compatible with ``matrix`` (up to 90% of the maximum)."""
    ties = rng.uniform(0.0, 0.9, size=matrix.shape) * 2 * np.minimum(matrix, 1 - matrix)
    ties = np.triu(ties, 1)
    return ties + ties.T


@pytest.mark.parametrize("class_b", [False, True], ids=["class-A", "class-B"])
def test_closed_form_with_ties_equals_brute_force(class_b):
    """T* and w* with tie probabilities: the closed form on (1 − t)·d(p_d, ½) equals the LP whose
    costs are the KL infima of the three-outcome model, found by numerical search."""
    rng = np.random.default_rng(14)
    for _ in range(6):
        matrix = random_condorcet_matrix(rng, int(rng.integers(3, 6)))
        ties = random_ties(rng, matrix)

        def cost_of(k, j, matrix=matrix, ties=ties):
            return trinomial_cost(
                matrix[k, j] - ties[k, j] / 2, ties[k, j], 1 - matrix[k, j] - ties[k, j] / 2
            )

        closed = optimal_allocation(matrix, assume_condorcet=class_b, tie_prob=ties)
        t_star, shares = brute_force_max_min(matrix, class_b, cost_of)
        assert closed.t_star == pytest.approx(t_star, rel=1e-5)
        np.testing.assert_allclose(closed.proportions, shares, atol=1e-5)
        # Counting ties ½ never has the smaller characteristic time.
        half = optimal_allocation(matrix, assume_condorcet=class_b, tie_prob=ties, ties="half")
        assert half.t_star >= closed.t_star * (1 - 1e-12)


def test_ties_scale_the_information_and_epsilon_lives_on_the_decisive_scale():
    matrix = np.array([[0.5, 0.6], [0.4, 0.5]])
    # 60% ties: P(win) = 0.3, P(loss) = 0.1, so the decisive win probability is 0.75.
    ties = np.array([[0.0, 0.6], [0.6, 0.0]])
    information, p_decisive = pair_information(matrix, ties, 0.5)
    assert p_decisive[0, 1] == pytest.approx(0.3 / 0.4)
    assert information[0, 1] == pytest.approx(0.4 * kl_bernoulli(0.75, 0.5))
    with_margin = optimal_allocation(matrix, epsilon=0.1, tie_prob=ties)
    assert with_margin.t_star == pytest.approx(1 / (0.4 * kl_bernoulli(0.75, 0.4)))
    assert optimal_allocation(matrix).t_star == pytest.approx(1 / kl_bernoulli(0.6, 0.5))
    with pytest.raises(ValueError, match="ties: unknown 'quarter'"):
        optimal_allocation(matrix, tie_prob=ties, ties="quarter")


def test_decisive_statistic_is_never_below_the_half_statistic():
    """(α + β)·d(α/(α + β), ½) ≥ N·d((α + τ/2)/N, ½) for every (α, τ, β) with N = α + τ + β ≤ 40."""
    worst = np.inf
    for wins in range(41):
        for ties in range(41 - wins):
            for losses in range(41 - wins - ties):
                total = wins + ties + losses
                if total == 0:
                    continue
                decisive = wins + losses
                lhs = decisive * kl_bernoulli(wins / decisive, 0.5) if decisive else 0.0
                rhs = total * kl_bernoulli((wins + ties / 2) / total, 0.5)
                worst = min(worst, lhs - rhs)
    assert worst >= -1e-12
    assert worst == pytest.approx(0.0, abs=1e-12)  # equality without ties


def test_condorcet_winner_and_leader():
    assert condorcet_winner(reference_instance("CYC4").win_prob) == 0
    cycle = np.array([[0.5, 0.6, 0.3], [0.4, 0.5, 0.6], [0.7, 0.4, 0.5]])
    assert condorcet_winner(cycle) is None
    with pytest.raises(ValueError, match="no Condorcet winner"):
        optimal_allocation(cycle)
    # No empirical winner: policies 1 and 2 share the largest row minimum (0.4); 2 has the
    # larger row sum (1.6 against 1.5).
    assert empirical_leader(cycle) == 2
    # Ties of the row minimum go to the larger row sum.
    hat = np.full((3, 3), 0.5)
    hat[2, 0], hat[0, 2] = 1.0, 0.0
    assert empirical_leader(hat) == 2


def test_glr_statistics_by_definition():
    counts = np.array([[0, 10, 20], [10, 0, 5], [20, 5, 0]], dtype=float)
    hat = np.array([[0.5, 0.7, 0.4], [0.3, 0.5, 0.8], [0.6, 0.2, 0.5]])
    stat_a = glr_class_a(counts, hat, leader=0)
    assert stat_a[1] == pytest.approx(10 * kl_bernoulli(0.7, 0.5))
    assert stat_a[2] == 0.0  # the leader is behind: no evidence
    stat_eps = glr_class_a(counts, hat, leader=0, level=0.35)
    assert stat_eps[2] == pytest.approx(20 * kl_bernoulli(0.4, 0.35))
    stat_b, witnesses = glr_class_b(counts, hat, leader=1)
    # Rival 0 is beaten by 2 (p̂_20 = .6); rival 2 by 1 (p̂_12 = .8).
    assert stat_b[0] == pytest.approx(20 * kl_bernoulli(0.6, 0.5))
    assert stat_b[2] == pytest.approx(5 * kl_bernoulli(0.8, 0.5))
    assert witnesses[2, 0] and witnesses[1, 2] and not witnesses[0, 2]
