"""The ask/tell experiment (docs/architecture.md): the one object every runner, store and CLI
drives.

>>> from llmpo import Experiment, Unstructured
>>> exp = Experiment(Unstructured(["a", "b", "c"]), delta=0.05)
>>> pairs = exp.ask(n=4)   # compare these next: index pairs (names=True gives names)
>>> exp.tell(*pairs[0], outcome=1.0)
>>> exp.tell("a", "c", 0.5)   # tell also takes names
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast, overload

import numpy as np
from numpy.typing import NDArray

from llmpo.errors import ConfigError, DataError, StateError
from llmpo.models.base import Certificate, Pair
from llmpo.models.structured import StructuredModel
from llmpo.models.unstructured import UnstructuredModel
from llmpo.registry import STRATEGIES
from llmpo.spaces import Space, Structured, Unstructured
from llmpo.stats.thresholds import Threshold, make_threshold
from llmpo.stats.unstructured import check_ties_mode
from llmpo.strategies.base import SelfStopping, Strategy

#: Above this many policies a structured space's Result carries no K×K matrices (at K = 10,000
#: each would take 800 MB): per-rival figures, compared pairs and utilities stand in for them.
DENSE_RESULT_MAX_POLICIES = 100
#: Why an experiment stopped: its leader was certified, the comparison budget
#: (``max_comparisons``) ran out, or — decided by a live runner — the cost budget (``max_cost``).
StopReason = Literal["certified", "max_comparisons", "max_cost"]


@dataclass(frozen=True)
class Result:
    """What an experiment concluded, or has concluded so far.

    Attributes
    ----------
    policies : tuple of str
        Policy names, indexed as everywhere else.
    best : int
        The certified policy, or the current leader when not (yet) certified.
    certified : bool
        True when the stopping rule certified ``best`` at confidence 1 − δ. False while running
        and when the comparison budget ran out first (then ``best`` is only the best so far).
    stop_reason : {"certified", "max_comparisons", "max_cost"} or None
        Why the experiment stopped; None while it runs. ``max_cost`` is set by the live runner
        that stopped on its cost budget (the experiment itself only counts comparisons).
    n_comparisons : int
        Comparisons told.
    rivals, statistics, thresholds : list
        Per rival of ``best``: its index, the GLR statistic and the stopping threshold. In a
        structured space the statistic is exact for the 200 weakest rivals and for every rival
        the stopping rule had to fit, and a proven lower bound of it for the others.
    win_prob_hat : ndarray or None
        K×K estimated P(i ≻ j); None for a structured space with more than
        ``DENSE_RESULT_MAX_POLICIES`` policies.
    counts : ndarray or None
        K×K comparisons per pair; None when ``win_prob_hat`` is.
    rival_comparisons, rival_win_prob : list
        Per rival of ``best``: comparisons of the pair (best, rival) and estimated
        P(best ≻ rival) on the statistic's scale (decisive: P(win | not a tie)).
    rival_wins, rival_ties, rival_losses : list
        Per rival of ``best``: wins, ties and losses of ``best`` against it (a fractional
        outcome y counts (2y − 1)⁺ as a win and (1 − 2y)⁺ as a loss); empty for a structured
        space.
    ties : {"decisive", "half"}
        How the statistics treat ties (docs/ties.md).
    compared_pairs : list of (int, int, int, float)
        Every pair compared, as (a, b, comparisons, P̂(a ≻ b)) with a < b.
    utilities : ndarray or None
        Structured space: estimated utilities θ̂ᵀx_i − θ̂ᵀx_best of every policy (tested or not).
    utility_intervals : ndarray or None
        Structured space: K × 2 95% Wald intervals of those utility differences (approximate,
        not anytime-valid; the certificate is the GLR rule).
    feature_effects : ndarray or None
        Structured space: d × 3, each feature's estimated effect θ̂_k on the utility with a 95%
        Wald interval (estimate, low, high); names in ``space.feature_names``.
    target_proportions : list of (int, int, float)
        Current plug-in optimal shares per pair.
    delta, epsilon : float
        Confidence parameter and indifference margin.
    threshold : str
        Name of the stopping threshold; ``threshold_heuristic`` is True when it has no proof.
    strategy : str
        Name of the sampling rule.
    """

    policies: tuple[str, ...]
    best: int
    certified: bool
    stop_reason: StopReason | None
    n_comparisons: int
    rivals: list[int]
    statistics: list[float]
    thresholds: list[float]
    win_prob_hat: NDArray[np.float64] | None = field(repr=False)
    counts: NDArray[np.float64] | None = field(repr=False)
    target_proportions: list[tuple[int, int, float]] = field(repr=False)
    delta: float
    epsilon: float
    threshold: str
    threshold_heuristic: bool
    strategy: str
    rival_comparisons: list[int] = field(default_factory=list, repr=False)
    rival_win_prob: list[float] = field(default_factory=list, repr=False)
    rival_wins: list[float] = field(default_factory=list, repr=False)
    rival_ties: list[float] = field(default_factory=list, repr=False)
    rival_losses: list[float] = field(default_factory=list, repr=False)
    ties: str = "decisive"
    compared_pairs: list[tuple[int, int, int, float]] = field(default_factory=list, repr=False)
    utilities: NDArray[np.float64] | None = field(default=None, repr=False)
    utility_intervals: NDArray[np.float64] | None = field(default=None, repr=False)
    feature_effects: NDArray[np.float64] | None = field(default=None, repr=False)

    @property
    def best_name(self) -> str:
        """Name of ``best``."""
        return self.policies[self.best]

    @property
    def min_margin(self) -> float:
        """Smallest statistic − threshold over the rivals (> 0 when certified)."""
        return min(s - b for s, b in zip(self.statistics, self.thresholds, strict=True))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary.

        ``win_prob_hat`` and ``counts`` are null when the result has no K×K matrices (large
        structured spaces); ``compared_pairs`` and, for structured spaces, ``utilities`` (each
        policy's estimated utility relative to the best, with its interval) are always there.
        """
        utilities = None
        if self.utilities is not None and self.utility_intervals is not None:
            utilities = [
                {
                    "policy": name,
                    "utility_vs_best": float(u),
                    "lower": float(low),
                    "upper": float(high),
                }
                for name, u, (low, high) in zip(
                    self.policies, self.utilities, self.utility_intervals, strict=True
                )
            ]
        return {
            "best": self.best_name,
            "best_index": self.best,
            "certified": self.certified,
            "stop_reason": self.stop_reason,
            "n_comparisons": self.n_comparisons,
            "delta": self.delta,
            "epsilon": self.epsilon,
            "threshold": self.threshold,
            "threshold_heuristic": self.threshold_heuristic,
            "strategy": self.strategy,
            "ties": self.ties,
            "rivals": [
                {
                    "policy": self.policies[r],
                    "statistic": _finite(s),
                    "threshold": _finite(b),
                    "comparisons": n,
                    "win_prob_hat": p,
                    **self.rival_record(index),
                }
                for index, (r, s, b, n, p) in enumerate(
                    zip(
                        self.rivals,
                        self.statistics,
                        self.thresholds,
                        self.rival_comparisons,
                        self.rival_win_prob,
                        strict=True,
                    )
                )
            ],
            "policies": list(self.policies),
            "win_prob_hat": None if self.win_prob_hat is None else self.win_prob_hat.tolist(),
            "counts": None if self.counts is None else self.counts.astype(int).tolist(),
            "compared_pairs": [
                {"pair": [self.policies[a], self.policies[b]], "comparisons": n, "win_prob_hat": p}
                for a, b, n, p in self.compared_pairs
            ],
            "utilities": utilities,
            "target_proportions": [
                {"pair": [self.policies[a], self.policies[b]], "share": w}
                for a, b, w in self.target_proportions
            ],
        }

    def rival_record(self, index: int) -> dict[str, float]:
        """``{"wins", "ties", "losses"}`` of ``best`` against rival number ``index`` (or empty)."""
        if index >= len(self.rival_wins):
            return {}
        return {
            "wins": self.rival_wins[index],
            "ties": self.rival_ties[index],
            "losses": self.rival_losses[index],
        }


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


class Experiment:
    """Adaptive, δ-correct identification of the best policy by ask/tell (LLM-PO).

    Parameters
    ----------
    space : Space, int or sequence of str
        The policy space; a count or a list of names means :class:`~llmpo.spaces.Unstructured`.
    delta : float
        Error probability: the certified policy is optimal with probability ≥ 1 − δ.
    strategy : str or Strategy
        ``"llmpo"`` (the space's default rule), another rule of the space (``"llmpo-tracking"``),
        ``"uniform"`` (round-robin over all pairs), a baseline of the unstructured space
        (``"top-two"``, ``"successive-elimination"``, ``"knockout"``:
        :mod:`llmpo.strategies.baselines`), a baseline of the structured space (``"xy-static"``,
        ``"lucb"``: :mod:`llmpo.strategies.structured_baselines`), or a
        :class:`~llmpo.strategies.base.Strategy` (e.g. :class:`~llmpo.strategies.base.Oracle`). A
        :class:`~llmpo.strategies.base.SelfStopping` strategy stops by its own rule instead of
        the model's GLR rule.
    threshold : str or Threshold, optional
        ``"kt"`` (provably valid), ``"universal"`` (provably valid, structured space only) or
        ``"gk16-heuristic"`` (not proven valid). Default: the space's ``default_threshold``
        (``"kt"`` for :class:`~llmpo.spaces.Unstructured`, ``"universal"`` for
        :class:`~llmpo.spaces.Structured`).
    epsilon : float
        Indifference margin ε ∈ [0, ½): certify a policy whose every rival has P(best ≻ rival) >
        ½ − ε. Stops sooner when policies are nearly tied.
    assume_condorcet : bool
        Class B statistics and sampling (docs/statistics.md): much cheaper when rivals have strong
        opponents other than the winner, but δ-correct **only if a Condorcet winner exists**.
    max_comparisons : int, optional
        Comparison budget: when reached, the experiment stops and reports the best policy so far,
        flagged as not certified.
    ties : {"decisive", "half"}
        ``"decisive"`` (default): statistics on the decisive outcomes — a tie carries no
        information about which policy is better, so it does not dilute the evidence, and ε is
        the margin of P(win | not a tie). ``"half"``: a tie counts as half a win (the statistic
        used before this option existed; stores created before it resume with it). Both are
        δ-correct; on the same outcomes the decisive statistic is never smaller and its
        threshold never larger (docs/ties.md).
    seed : int, optional
        Seed of the generator handed to randomized strategies.

    Raises
    ------
    ValueError
        On a parameter out of range, naming it.
    """

    def __init__(
        self,
        space: Space | int | Sequence[str],
        delta: float = 0.05,
        strategy: str | Strategy = "llmpo",
        *,
        threshold: str | Threshold | None = None,
        epsilon: float = 0.0,
        assume_condorcet: bool = False,
        max_comparisons: int | None = None,
        ties: str = "decisive",
        seed: int | None = None,
    ) -> None:
        if not isinstance(space, Space):
            space = Unstructured(space)
        if not 0.0 < delta < 0.5:
            raise ConfigError(f"delta must lie in (0, 0.5), got {delta}")
        if not 0.0 <= epsilon < 0.5:
            raise ConfigError(f"epsilon must lie in [0, 0.5), got {epsilon}")
        if max_comparisons is not None and max_comparisons < 1:
            raise ConfigError(f"max_comparisons must be a positive integer, got {max_comparisons}")
        self.space = space
        self._by_name = {name: index for index, name in enumerate(space.policies)}
        self.delta = delta
        self.epsilon = epsilon
        self.max_comparisons = max_comparisons
        self.ties = check_ties_mode(ties)
        self.threshold = make_threshold(space.default_threshold if threshold is None else threshold)
        self.assume_condorcet = assume_condorcet
        #: The statistics model. Part of the core: code outside ``experiment.py`` and the core
        #: uses the methods below instead (mark_pending, abandon, certificate, pair_counts, …).
        self.model = space.make_model(delta, self.threshold, epsilon, assume_condorcet, ties)
        self.strategy = self._make_strategy(strategy)
        self.rng = np.random.default_rng(seed)
        self._stop_reason: StopReason | None = None
        self._final: Result | None = None

    def _make_strategy(self, strategy: str | Strategy) -> Strategy:
        if isinstance(strategy, Strategy):
            return strategy
        # Every name, built-in or plug-in, is known through the registry (docs/plugins.md).
        structured = not isinstance(self.space, Unstructured)
        rule = STRATEGIES.get(strategy).for_space(structured)
        if rule is None:
            fitting = [n for n in STRATEGIES.names() if STRATEGIES.get(n).for_space(structured)]
            raise ConfigError(
                f"field 'strategy': unknown {strategy!r} here: {strategy!r} is not a rule of the "
                f"{'structured' if structured else 'unstructured'} space; its rules: "
                f"{', '.join(fitting)}. Fix: choose one of them"
            )
        made: Strategy = rule()
        return made

    @classmethod
    def from_comparisons(
        cls,
        space: Space | int | Sequence[str],
        comparisons: Iterable[tuple[int, int, float]],
        *args: Any,
        on_told: Callable[[int, Experiment], None] | None = None,
        **options: Any,
    ) -> Experiment:
        """An experiment rebuilt from stored comparisons, told in their stored order.

        Parameters
        ----------
        space, *args, **options
            As for :class:`Experiment` (the stored configuration's settings).
        comparisons : iterable of (i, j, outcome)
            The comparisons an earlier run told, in the order it told them.
        on_told : callable, optional
            Called as ``on_told(n, experiment)`` after the n-th comparison (reports draw the
            statistic's trace from it).

        Notes
        -----
        The stopping rule is checked once, after the last comparison: a run stores no comparison
        after its experiment is done, so the stored ones end where it stopped, and checking every
        one (which refits a large structured model each time) would only repeat the run's work.
        Use :meth:`tell` to re-tell comparisons one by one with the rule checked after each.
        """
        experiment = cls(space, *args, **options)
        for n, (a, b, outcome) in enumerate(comparisons, start=1):
            experiment._record(experiment._index(a), experiment._index(b), float(outcome))
            if on_told is not None:
                on_told(n, experiment)
        experiment._check_stop()
        return experiment

    # ---- the loop ------------------------------------------------------------------------------
    @property
    def structured(self) -> bool:
        """True for a :class:`~llmpo.spaces.Structured` space (the one place that decides)."""
        return isinstance(self.space, Structured)

    @property
    def self_stopping(self) -> bool:
        """True when the sampling rule stops by its own rule instead of the GLR rule."""
        return isinstance(self.strategy, SelfStopping)

    @property
    def done(self) -> bool:
        """True once the leader is certified or the comparison budget is spent."""
        return self._stop_reason is not None

    @property
    def n_comparisons(self) -> int:
        """Comparisons told so far."""
        return self.model.n_told

    @property
    def n_pending(self) -> int:
        """Comparisons asked and not yet told."""
        return self.model.n_pending

    @overload
    def ask(self, n: int = 1, *, names: Literal[False] = False) -> list[Pair]: ...

    @overload
    def ask(self, n: int = 1, *, names: Literal[True]) -> list[tuple[str, str]]: ...

    def ask(self, n: int = 1, *, names: bool = False) -> list[Pair] | list[tuple[str, str]]:
        """Propose the next ``n`` pairs to compare (fewer near the budget, none when done).

        Each proposed pair counts as sampled for the rest of the batch and for later calls until
        its outcome is told, so a batch spreads over the pairs the rule wants most.

        Parameters
        ----------
        n : int
            How many pairs to propose.
        names : bool
            False (default): each pair as two policy indices into ``space.policies``. True: as
            the two policies' names. :meth:`tell` takes either form.

        Returns
        -------
        list of tuple
            The pairs ``(i, j)``, ``[]`` once the experiment is done.
        """
        if n < 1:
            raise ConfigError(f"n must be a positive integer, got {n}")
        if self.done:
            return []
        if self.max_comparisons is not None:
            n = min(n, self.max_comparisons - self.model.n_told - self.model.n_pending)
        pairs: list[Pair] = []
        for _ in range(max(n, 0)):
            a, b = self.strategy.select(self.model, self.rng)
            self.model.mark_pending(a, b)
            pairs.append((a, b))
        if names:
            policies = self.space.policies
            return [(policies[a], policies[b]) for a, b in pairs]
        return pairs

    def _index(self, policy: int | str) -> int:
        """The index of a policy given by index or by name; ValueError naming the known ones."""
        policies = self.space.policies
        k = len(policies)
        if isinstance(policy, str):
            if policy in self._by_name:
                return self._by_name[policy]
            else:
                shown = ", ".join(repr(p) for p in policies[:10]) + (", …" if k > 10 else "")
                raise ConfigError(f"unknown policy {policy!r}; the policies are {shown}")
        if isinstance(policy, int | np.integer) and not isinstance(policy, bool):
            if 0 <= policy < k:
                return int(policy)
            raise ConfigError(f"unknown policy {policy}: indices run 0..{k - 1}")
        raise ConfigError(
            f"unknown policy {policy!r}: give a name or an integer index 0..{k - 1}"
        )

    def tell(self, i: int | str, j: int | str, outcome: float) -> None:
        """Record the outcome of comparing policy ``i`` with policy ``j``.

        Parameters
        ----------
        i, j : int or str
            The two policies, each by index into ``space.policies`` or by name (as
            :meth:`ask` gives them), distinct, in any order (need not have been asked).
        outcome : float
            1 if i won, 0.5 for a tie, 0 if j won; or a preference probability in [0, 1] (how
            likely i is the better answer), which the statistics take as (2y − 1)⁺ of a win and
            (1 − 2y)⁺ of a loss (docs/ties.md).

        Raises
        ------
        ValueError
            For an outcome that is not a number in [0, 1] (NaN included), an unknown policy or
            a policy compared with itself, naming the comparison; the experiment is unchanged.
        RuntimeError
            When the experiment is already done.

        Examples
        --------
        >>> exp = Experiment(["a", "b", "c"])
        >>> exp.tell("a", "b", 1)   # a beat b
        >>> exp.tell(2, 0, 0.5)     # c tied with a
        """
        a, b = self._index(i), self._index(j)
        if a == b:
            raise ConfigError(
                f"unknown pair ({i!r}, {j!r}): a policy cannot be compared with itself"
            )
        if (
            isinstance(outcome, bool)
            or not isinstance(outcome, int | float | np.integer | np.floating)
            or not 0.0 <= outcome <= 1.0  # False for NaN too
        ):
            raise DataError(
                f"comparison ({i!r}, {j!r}): outcome must be a number in [0, 1] (1: policy "
                f"{i!r} won, 0.5: tie, 0: policy {j!r} won, or the probability that {i!r} is "
                f"better), got {outcome!r}"
            )
        if self.done:
            raise StateError("the experiment is done; its result is final")
        self._record(a, b, float(outcome))
        self._check_stop()

    def _record(self, a: int, b: int, outcome: float) -> None:
        self.model.unmark_pending(a, b)
        self.model.tell(a, b, outcome)

    def mark_pending(self, i: int | str, j: int | str) -> None:
        """Count the pair (i, j) as asked, until it is told or abandoned.

        For comparisons decided without :meth:`ask`: a resumed run dispatching again what an
        earlier run asked, or comparisons added to a round that shares answers.
        """
        self.model.mark_pending(self._index(i), self._index(j))

    def abandon(self, i: int | str, j: int | str) -> None:
        """Forget a comparison of (i, j) that was asked but will never be told (its verdict was
        invalid, or its worker gave up), so the sampling rule no longer counts it."""
        self.model.unmark_pending(self._index(i), self._index(j))

    def certificate(self) -> Certificate:
        """The GLR certificate now: the leader, and per rival its statistic and threshold."""
        return self.model.certificate()

    def pair_counts(self) -> NDArray[np.float64]:
        """K×K comparisons told per pair (symmetric).

        Raises
        ------
        ValueError
            For a structured space, which keeps no K×K array (its evidence is shared by every
            pair through the features).
        """
        if self.structured:
            raise ValueError("a structured space keeps no K×K counts")
        return self.model.counts()

    def _check_stop(self) -> None:
        if self.done:
            return
        if self._is_certified():
            self._stop("certified")
        elif self.max_comparisons is not None and self.model.n_told >= self.max_comparisons:
            self._stop("max_comparisons")

    def _is_certified(self) -> bool:
        if isinstance(self.strategy, SelfStopping):
            return self.strategy.is_certified(self.model)
        return self.model.is_certified()

    def _certificate(self) -> Certificate:
        if isinstance(self.strategy, SelfStopping):
            return self.strategy.certificate(self.model)
        return self.model.certificate()

    def _stop(self, reason: StopReason) -> None:
        self._stop_reason = reason
        self._final = self._snapshot()

    # ---- results -------------------------------------------------------------------------------
    @property
    def result(self) -> Result:
        """The answer: final once done, the current state while running."""
        return self._final if self._final is not None else self._snapshot()

    def _snapshot(self) -> Result:
        certificate = self._certificate()
        model = self.model
        leader = certificate.leader
        rivals = [int(r) for r in certificate.rivals]
        dense = self.space.n_policies <= DENSE_RESULT_MAX_POLICIES or not self.structured
        win_prob = model.win_prob_hat() if dense else None
        counts = model.counts() if dense else None
        utilities = intervals = effects = None
        records: list[tuple[float, float, float]] = []
        if self.structured:  # θ̂ᵀx for every policy
            fitted = cast(StructuredModel, model)
            raw = fitted.utilities()
            utilities = raw - raw[leader]
            intervals = fitted.utility_intervals()
            effects = fitted.feature_effects()
        else:
            counted = cast(UnstructuredModel, model)
            records = [counted.outcome_counts(leader, r) for r in rivals]
        if win_prob is not None and counts is not None:
            rival_win_prob = [float(win_prob[leader, r]) for r in rivals]
            rival_comparisons = [int(counts[leader, r]) for r in rivals]
        else:  # large structured space: P̂(best ≻ r) = σ(û_best − û_r) from the utilities
            gaps = np.zeros(0) if utilities is None else utilities[rivals]
            rival_win_prob = [float(p) for p in 1.0 / (1.0 + np.exp(gaps))]
            with_leader = {
                (a, b): n for a, b, n, _ in model.compared_pairs() if leader in (a, b)
            }
            rival_comparisons = [
                with_leader.get((min(leader, r), max(leader, r)), 0) for r in rivals
            ]
        return Result(
            policies=self.space.policies,
            best=certificate.leader,
            certified=self._stop_reason == "certified",
            stop_reason=self._stop_reason,
            n_comparisons=self.model.n_told,
            rivals=rivals,
            statistics=[float(s) for s in certificate.statistics],
            thresholds=[float(b) for b in certificate.thresholds],
            win_prob_hat=win_prob,
            counts=counts,
            target_proportions=self.model.target_proportions(),
            delta=self.delta,
            epsilon=self.epsilon,
            threshold=self.threshold.name,
            threshold_heuristic=self.threshold.heuristic,
            strategy=self.strategy.name,
            rival_comparisons=rival_comparisons,
            rival_win_prob=rival_win_prob,
            rival_wins=[w for w, _, _ in records],
            rival_ties=[t for _, t, _ in records],
            rival_losses=[loss for _, _, loss in records],
            ties=self.ties,
            compared_pairs=model.compared_pairs(),
            utilities=utilities,
            utility_intervals=intervals,
            feature_effects=effects,
        )
