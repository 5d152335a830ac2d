"""Bernoulli Kullback–Leibler divergence, its inverses, and the confidence constant kl(δ, 1−δ).

Pure functions on floats or numpy arrays; no state, no I/O.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import rel_entr

# Probabilities are clipped this far from 0 and 1 so that d(p, q) stays finite.
PROB_CLIP = 1e-12


def kl_bernoulli(p: ArrayLike, q: ArrayLike) -> NDArray[np.float64] | float:
    """Bernoulli KL divergence d(p, q) = p log(p/q) + (1−p) log((1−p)/(1−q)).

    Parameters
    ----------
    p, q : float or array_like
        Success probabilities in [0, 1]; ``q`` is clipped to [1e-12, 1 − 1e-12].

    Returns
    -------
    float or ndarray
        The divergence, elementwise, with numpy broadcasting.
    """
    p_arr = np.asarray(p, dtype=float)
    q_arr = np.clip(np.asarray(q, dtype=float), PROB_CLIP, 1.0 - PROB_CLIP)
    value = rel_entr(p_arr, q_arr) + rel_entr(1.0 - p_arr, 1.0 - q_arr)
    return float(value) if value.ndim == 0 else value


def kl_bernoulli_scalar(p: float, q: float) -> float:
    """Scalar d(p, q) in pure Python for the ask/tell hot path (≈10× faster than numpy)."""
    q = min(max(q, PROB_CLIP), 1.0 - PROB_CLIP)
    value = 0.0
    if p > 0.0:
        value += p * math.log(p / q)
    if p < 1.0:
        value += (1.0 - p) * math.log((1.0 - p) / (1.0 - q))
    return value


def _kl_inverse(
    p: ArrayLike, level: ArrayLike, upward: bool, iterations: int
) -> NDArray[np.float64] | float:
    """Bisection for the q on one side of p where d(p, q) reaches ``level`` (monotone there)."""
    p_arr, level_arr = np.broadcast_arrays(np.asarray(p, float), np.asarray(level, float))
    if np.any(level_arr < 0):
        raise ValueError("level must be non-negative")
    lo, hi = (p_arr.copy(), np.ones_like(p_arr)) if upward else (np.zeros_like(p_arr), p_arr.copy())
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        inside = np.asarray(kl_bernoulli(p_arr, mid)) <= level_arr
        # Moving towards p keeps d(p, q) ≤ level; the boundary lies on the far side of `inside`.
        if upward:
            lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
        else:
            lo, hi = np.where(inside, lo, mid), np.where(inside, mid, hi)
    result = lo if upward else hi
    return float(result) if result.ndim == 0 else result


def kl_upper(p: ArrayLike, level: ArrayLike, iterations: int = 60) -> NDArray[np.float64] | float:
    """Largest q ≥ p with d(p, q) ≤ level (the KL-UCB upper confidence bound).

    Parameters
    ----------
    p : float or array_like
        Empirical means in [0, 1].
    level : float or array_like
        Non-negative divergence budget (e.g. ``threshold / n``).
    iterations : int
        Bisection steps; 60 gives machine precision.

    Returns
    -------
    float or ndarray
        The bound, elementwise.
    """
    return _kl_inverse(p, level, True, iterations)


def kl_lower(p: ArrayLike, level: ArrayLike, iterations: int = 60) -> NDArray[np.float64] | float:
    """Smallest q ≤ p with d(p, q) ≤ level (the KL lower confidence bound); see :func:`kl_upper`."""
    return _kl_inverse(p, level, False, iterations)


def kl_confidence(delta: float) -> float:
    """kl(δ, 1 − δ): the factor of T* in the lower bound on E[τ] of any δ-correct procedure.

    Parameters
    ----------
    delta : float
        Error probability in (0, 1/2).

    Returns
    -------
    float
        kl(δ, 1 − δ), which is ≈ log(1/δ) for small δ.
    """
    if not 0.0 < delta < 0.5:
        raise ValueError(f"delta must lie in (0, 0.5), got {delta}")
    return kl_bernoulli_scalar(delta, 1.0 - delta)
