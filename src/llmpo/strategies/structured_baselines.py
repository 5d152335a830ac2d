"""Baselines of the structured space (issue 6), behind the same strategy interface as LLM-PO.

Both read the same :class:`~llmpo.models.structured.StructuredModel` and are driven by the same
ask/tell :class:`~llmpo.experiment.Experiment`, so a benchmark compares like with like.

* ``xy-static`` (:class:`XYStatic`): a fixed design over pairs, chosen before any outcome, tracked
  to the end; it stops with the model's GLR rule.
* ``lucb`` (:class:`StructuredLUCB`): LUCB with logistic (likelihood-ratio) confidence sets; its
  stopping rule is stated in its docstring and coincides with the model's GLR rule.

Both are therefore δ-correct exactly when structured LLM-PO is: correctness is a property of the
stopping rule, whatever the pairs sampled (see :mod:`llmpo.models.structured`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit

from llmpo.models.base import Pair
from llmpo.models.structured import StructuredModel
from llmpo.stats.structured import MAX_ALL_PAIRS, all_pairs, candidate_pairs
from llmpo.strategies.base import Oracle, Strategy
from llmpo.strategies.structured import _StructuredRule

#: Fedorov–Wynn stops when max_z zᵀA(w)⁻¹z ≤ d·(1 + this) (Kiefer–Wolfowitz: = d at the optimum).
DESIGN_TOLERANCE = 1e-3
DESIGN_ITERATIONS = 5_000
#: Pairs with a smaller design weight are dropped (and the rest renormalized) before tracking.
DESIGN_SUPPORT = 1e-4


def design_pairs(features: NDArray[np.float64]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """The pairs a static design may use: all of them up to 5,000, else a θ-free subset.

    For large K the subset is :func:`~llmpo.stats.structured.candidate_pairs` at θ = 0 (policy
    0's pairs with every other policy, plus the pairs among the first 2d + 2 policies and the
    policies extreme along each principal axis): no outcome has been seen, so nothing better than
    the geometry of the features can choose them.
    """
    k = features.shape[0]
    if k * (k - 1) // 2 <= MAX_ALL_PAIRS:
        return all_pairs(k)
    return candidate_pairs(features, np.zeros(features.shape[1]))


def g_optimal_design(
    differences: NDArray[np.float64],
    tolerance: float = DESIGN_TOLERANCE,
    iterations: int = DESIGN_ITERATIONS,
) -> NDArray[np.float64]:
    """G-optimal design w over the rows z of ``differences``: argmin_w max_z zᵀA(w)⁻¹z.

    A(w) = Σ w_z z zᵀ. Solved by the Fedorov–Wynn (Frank–Wolfe) iteration for the equivalent
    D-optimal design (Kiefer–Wolfowitz theorem): move weight γ = (g/d − 1)/(g − 1) to the row of
    largest g = zᵀA⁻¹z until g ≤ d(1 + tolerance).

    Parameters
    ----------
    differences : ndarray
        m × d, rows spanning R^d.
    tolerance, iterations : float, int
        Stopping tolerance on max g / d − 1 and the iteration cap.

    Returns
    -------
    ndarray
        Weights (m,), summing to 1.
    """
    z = np.asarray(differences, float)
    m, d = z.shape
    weights = np.full(m, 1.0 / m)
    for _ in range(iterations):
        information = (z.T * weights) @ z
        spread = np.einsum("md,md->m", z, np.linalg.solve(information, z.T).T)
        best = int(np.argmax(spread))
        g = float(spread[best])
        if g <= d * (1.0 + tolerance):
            break
        step = (g / d - 1.0) / (g - 1.0)
        weights *= 1.0 - step
        weights[best] += step
    return weights


class XYStatic(Oracle):
    """A fixed XY-optimal design over pairs, D-tracked, stopped by the model's GLR rule.

    Source: Soare, Lazaric & Munos 2014 ("Best-arm identification in linear bandits", NeurIPS),
    the XY-static allocation: choose, before any observation, proportions w over the arms that
    minimize max_{y ∈ Y} ‖y‖²_{A(w)⁻¹}, Y the directions that separate two arms, and sample them.
    Here an arm is a pair (a, b) with vector z_ab = x_a − x_b, and Y = {x_i − x_j} is the same set
    of vectors, so the XY design is the G-optimal design over the pairs
    (:func:`g_optimal_design` on :func:`design_pairs`). It ignores the logistic weights
    σ'(θᵀz), which depend on the unknown θ: the design is the linear model's, as in the source.

    The design spans R^d, so θ̂ is consistent without forced exploration; pairs are D-tracked
    (argmax t·w_ab − n_ab, as :class:`~llmpo.strategies.base.Oracle`).

    **Stopping rule**: the structured model's GLR rule with its threshold (universal inference
    by default), as structured LLM-PO: δ-correct whatever the design.
    """

    name = "xy-static"

    def __init__(self) -> None:
        self.pairs: list[Pair] = []
        self.shares = np.zeros(0)

    def select(self, model: StructuredModel, rng: np.random.Generator) -> Pair:  # type: ignore[override]
        if not self.pairs:
            rows, cols = design_pairs(model.features)
            weights = g_optimal_design(model.features[rows] - model.features[cols])
            keep = np.flatnonzero(weights > DESIGN_SUPPORT)
            self.pairs = [(int(rows[k]), int(cols[k])) for k in keep]
            self.shares = weights[keep] / weights[keep].sum()
        return super().select(model, rng)


class StructuredLUCB(_StructuredRule):
    """Structured LUCB with logistic confidence sets.

    Source: LUCB (Kalyanakrishnan, Tewari, Auer & Stone 2012, "PAC subset selection in stochastic
    multi-armed bandits") in its linear form, LinGapE (Xu, Honda & Sugiyama 2018, "A fully
    adaptive algorithm for pure exploration in linear bandits"), with the likelihood-ratio
    confidence sets of a logistic model (as in Faury, Abeille, Calauzènes & Fercoq 2020):

        C_t = {θ : LL_t(θ̂) − LL_t(θ) ≤ β_t},

    β_t the model's threshold (universal inference: β_t = log(1/δ) + LL_t(θ̂) − M_t, so that
    θ ∈ C_t for all t with probability ≥ 1 − δ by Ville's inequality).

    **Sampling.** Leader î = argmax θ̂ᵀx; challenger c = the rival with the largest upper
    confidence bound on its gap, B_j = θ̂ᵀ(x_j − x_î) + √(2β_t · y_jᵀH⁻¹y_j), y_j = x_î − x_j,
    H the observed information with pending comparisons (the Laplace approximation of C_t, used
    for the choice only); then the pair that shrinks the width of y_c most,
    argmax_z σ'(θ̂ᵀz)(zᵀH⁻¹y_c)² / (1 + σ'(θ̂ᵀz) zᵀH⁻¹z) (Sherman–Morrison), as LinGapE's greedy
    arm choice. Forced exploration comes first, the same as structured LLM-PO's.

    **Stopping rule.** Stop when every rival's upper confidence bound over C_t is negative:
    max_{θ ∈ C_t} θᵀ(x_j − x_î) < 0 for all j ≠ î. LL is concave and θ̂ lies in the open half-space
    θᵀ(x_j − x_î) < 0, so the maximum of LL over the other half-space is reached on the hyperplane
    θᵀ(x_j − x_î) = 0, and the condition reads LL_t(θ̂) − max_{θᵀ(x_j − x_î) = 0} LL_t(θ) > β_t:
    the model's GLR statistic Z_j above its threshold. The rule is therefore evaluated by
    :meth:`~llmpo.models.structured.StructuredModel.is_certified` (exact constrained fits), and
    is δ-correct: an error needs θ ∉ C_t.
    """

    name = "lucb"

    def __init__(self) -> None:
        super().__init__()
        self._all_pairs: tuple[NDArray[np.intp], NDArray[np.intp]] | None = None

    def _pairs(
        self, model: StructuredModel, theta: NDArray[np.float64]
    ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        k = model.n_policies
        if k * (k - 1) // 2 <= MAX_ALL_PAIRS:
            if self._all_pairs is None:
                self._all_pairs = all_pairs(k)
            return self._all_pairs
        return candidate_pairs(model.features, theta)

    def select(self, model: StructuredModel, rng: np.random.Generator) -> Pair:  # type: ignore[override]
        forced = self.forced_pair(model)
        if forced is not None:
            return forced
        theta = model.estimate()
        leader = model.leader
        beta = max(model.stopping_threshold(), 0.0)
        information = model.observed_information(include_pending=True)
        rivals = np.delete(np.arange(model.n_policies), leader)
        gaps = model.features[leader] - model.features[rivals]
        widths = np.einsum("jd,dj->j", gaps, np.linalg.solve(information, gaps.T))
        upper = -(gaps @ theta) + np.sqrt(2.0 * beta * np.maximum(widths, 0.0))
        direction = gaps[int(np.argmax(upper))]
        rows, cols = self._pairs(model, theta)
        z = model.features[rows] - model.features[cols]
        p = expit(z @ theta)
        weight = p * (1.0 - p)
        solved = np.linalg.solve(information, z.T).T  # H⁻¹z per pair
        spread = np.einsum("md,md->m", z, solved)
        gain = weight * (solved @ direction) ** 2 / (1.0 + weight * spread)
        best = int(np.argmax(gain))
        return int(rows[best]), int(cols[best])


#: Baselines of the structured space, by the name used in experiments, simulations and suites.
STRUCTURED_BASELINES: dict[str, type[Strategy]] = {
    XYStatic.name: XYStatic,
    StructuredLUCB.name: StructuredLUCB,
}

__all__ = ["STRUCTURED_BASELINES", "StructuredLUCB", "XYStatic", "g_optimal_design"]
