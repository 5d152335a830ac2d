"""Peer comparators: PAC dueling-bandit algorithms of the ``duelpy`` library on our environments.

Install with ``pip install 'llmpo[peers]'`` (duelpy 1.0.0). A peer is selected as strategy
``duelpy:<ClassName>`` in :func:`llmpo.harness.simulate.simulate`, ``llmpo simulate`` and bench
suites.

duelpy algorithms pull comparisons themselves (``algorithm.run()`` calls ``duel(i, j)`` on a
feedback mechanism until its own stopping rule holds), so a peer does not go through the ask/tell
:class:`~llmpo.experiment.Experiment`: :func:`run_peer` hands the algorithm a feedback mechanism
that answers from the same :class:`~llmpo.environments.synthetic.SyntheticEnvironment` the
simulations use (same per-pair random streams, so common random numbers with our strategies)
and counts every duel. A tie (outcome ½) becomes a win of either side by a fair coin. Each
algorithm gets ``failure_probability = δ`` and, where it takes one, a seeded ``random_state``; its
other constructor arguments keep duelpy's defaults unless given by keyword (``options``). Several
of them are (ε, δ)-PAC with a default ε > 0 (e.g. SequentialElimination ε = 0.05,
PlackettLucePACItem ε = 0.1): they may then return a policy within ε of the winner, which our
simulations count as an error, and they solve an easier problem than exact identification, so a
benchmark should set ε = 0 where the algorithm allows it (``options: {epsilon: 0.0}``; the paper
suite does so for PlackettLucePACItem, whose ε-Condorcet-winner test with ε = 0 is exact
identification). PlackettLucePACItem also assumes a Plackett–Luce model (it adds rank-broken
comparisons it never observed): it is δ-correct only on Bradley–Terry instances.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from llmpo.environments.synthetic import SyntheticEnvironment
from llmpo.errors import ConfigError, LlmpoError
from llmpo.harness.instances import UnstructuredInstance

PEER_PREFIX = "duelpy:"

#: duelpy's PAC algorithms offered as peers, and the method that names each one's answer.
PEER_ALGORITHMS: dict[str, str] = {
    "SequentialElimination": "get_copeland_winner",
    "KLDivergenceBasedPAC": "get_copeland_winner",
    "OptMax": "get_copeland_winner",
    "MallowsMPI": "get_condorcet_winner",
    "PlackettLucePACItem": "get_approximate_condorcet_winners",
    "KnockoutTournament": "get_condorcet_winner",
    "Savage": "get_copeland_winner",
}

#: Known defects of peers in duelpy 1.0.0, printed with every result of that peer.
PEER_FAULTS: dict[str, str] = {
    "Savage": (
        "duelpy 1.0.0 Savage has a defective confidence radius: it scales the failure "
        "probability by 3/(π²·P·n²) < 1 and HoeffdingConfidenceRadius returns radius 0 when "
        "scale/δ < 1, so every pair is decided after about one duel; its answers carry no "
        "δ guarantee"
    ),
}


#: The approximation parameter of each (ε, δ)-PAC peer (None: the peer has none).
PEER_EPSILON: dict[str, str | None] = {
    "SequentialElimination": "epsilon_upper",
    "KLDivergenceBasedPAC": "epsilon",
    "OptMax": "epsilon_range",
    "MallowsMPI": None,
    "PlackettLucePACItem": "epsilon",
    "KnockoutTournament": "epsilon",
    "Savage": None,
}


def peer_note(strategy: str, options: dict[str, Any] | None = None) -> str | None:
    """The easier problem a peer solves, to be stated with its results, or None.

    A peer run with its approximation parameter ε > 0 (its duelpy default unless ``options``
    set it) may answer an ε-approximate winner in its own sense: an easier problem than the
    exact identification every llmpo strategy solves. PlackettLucePACItem also assumes a
    Plackett–Luce model. None when ε = 0 and no model is assumed. Without duelpy installed the
    defaults cannot be read, and None is returned unless ``options`` set ε.
    """
    name = peer_class_name(strategy)
    options = options or {}
    notes = []
    parameter = PEER_EPSILON.get(name)
    if parameter is not None:
        value = options.get(parameter)
        if value is None:
            try:
                duelpy = import_duelpy()
            except PeerUnavailableError:
                return None
            default = inspect.signature(getattr(duelpy.algorithms, name)).parameters[parameter]
            value = default.default
        if float(value) > 0:
            notes.append(
                f"(ε, δ)-PAC with {parameter} = {value:g}: may answer an ε-approximate winner, "
                "an easier problem than exact identification"
            )
    if name == "PlackettLucePACItem":
        notes.append("assumes a Plackett–Luce model (δ-correct on Bradley–Terry instances only)")
        if parameter is not None and float(options.get(parameter, 1.0)) == 0.0:
            notes.append(
                "with ε = 0 a run can stall (every other policy pruned while the survivor's "
                f"bounds against them stay below ½): stopped after {MAX_IDLE_STEPS:,} steps "
                "without a duel, counted uncertified with no answer (an error)"
            )
    if name == "MallowsMPI":
        notes.append("assumes a Mallows model (δ-correct on Mallows instances only)")
    return "; ".join(notes) or None


class PeerUnavailableError(LlmpoError, RuntimeError):
    """duelpy is not installed (install the ``peers`` extra)."""


def is_peer(strategy: str) -> bool:
    """True when ``strategy`` names a duelpy peer (``duelpy:<ClassName>``)."""
    return strategy.startswith(PEER_PREFIX)


def peer_class_name(strategy: str) -> str:
    """The duelpy class of ``duelpy:<ClassName>``; refuses classes not offered as peers."""
    name = strategy.removeprefix(PEER_PREFIX)
    if name not in PEER_ALGORITHMS:
        known = ", ".join(PEER_PREFIX + n for n in PEER_ALGORITHMS)
        raise ConfigError(f"strategy: unknown peer {strategy!r}; choose one of {known}")
    return name


def peer_fault(strategy: str) -> str | None:
    """The known defect of a peer, to be stated with its results, or None."""
    return PEER_FAULTS.get(peer_class_name(strategy))


#: Constructor arguments the adapter sets itself and a suite may not override.
RESERVED_OPTIONS = ("feedback_mechanism", "failure_probability", "random_state", "time_horizon")


def check_peer_options(strategy: str, options: dict[str, Any]) -> None:
    """Refuse constructor options a peer does not take, naming them and the accepted ones.

    ``failure_probability`` is always δ and ``random_state`` is seeded by the adapter, so they
    cannot be set. Without duelpy installed only the reserved names are checked.

    Raises
    ------
    ValueError
        Naming the option and the fix.
    """
    name = peer_class_name(strategy)
    for option in options:
        if option in RESERVED_OPTIONS:
            raise ConfigError(
                f"options: {option!r} of {strategy} is set by llmpo (failure probability = δ, "
                "seeded random state, no horizon); remove it"
            )
    try:
        duelpy = import_duelpy()
    except PeerUnavailableError:
        return
    parameters = inspect.signature(getattr(duelpy.algorithms, name)).parameters
    accepted = [p for p in parameters if p not in RESERVED_OPTIONS]
    for option in options:
        if option not in parameters:
            raise ConfigError(
                f"options: {strategy} has no argument {option!r}; it takes {', '.join(accepted)}"
            )


def import_duelpy() -> ModuleType:
    """Import duelpy 1.0.0, first restoring the NumPy aliases it still uses.

    duelpy 1.0.0 refers to ``np.float``, ``np.bool`` and ``np.infty``, which NumPy removed
    (1.24 and 2.0). This is the one place that puts them back, as the builtins or constants they
    were aliases of, and only when missing; nothing else in llmpo relies on them.

    Raises
    ------
    PeerUnavailableError
        When duelpy is not installed.
    """
    for alias, value in (("float", float), ("bool", bool), ("infty", np.inf)):
        if alias not in np.__dict__:
            setattr(np, alias, value)
    try:
        import duelpy.algorithms
        import duelpy.feedback
    except ImportError as error:
        raise PeerUnavailableError(
            "duelpy peers need the optional extra: pip install 'llmpo[peers]'"
        ) from error
    return duelpy


@dataclass(frozen=True)
class PeerRun:
    """Outcome of one run of a peer algorithm.

    Attributes
    ----------
    best : int
        The policy it named (−1 when it named none).
    finished : bool
        True when the algorithm's own stopping rule ended the run (not the budget).
    n_comparisons : int
        Duels it asked for.
    pair_counts : ndarray, optional
        Duels per pair (a, b), a < b, in the order of ``numpy.triu_indices(K, 1)``.
    """

    best: int
    finished: bool
    n_comparisons: int
    pair_counts: NDArray[np.float64] | None = field(default=None, compare=False, repr=False)


#: Consecutive steps without a duel after which a peer is deemed stalled (see :func:`run_peer`).
MAX_IDLE_STEPS = 1_000


class _BudgetSpentError(Exception):
    """Raised inside duelpy when the comparison budget is spent."""


def run_peer(
    strategy: str,
    instance: UnstructuredInstance,
    delta: float,
    seed: np.random.SeedSequence,
    max_comparisons: int | None = None,
    options: dict[str, Any] | None = None,
) -> PeerRun:
    """Run the duelpy algorithm ``strategy`` to its end on synthetic outcomes of ``instance``.

    Parameters
    ----------
    strategy : str
        ``duelpy:<ClassName>``, one of :data:`PEER_ALGORITHMS`.
    instance : UnstructuredInstance
        True win and tie probabilities.
    delta : float
        Passed as ``failure_probability``.
    seed : SeedSequence
        Spawns the environment's seed (first child, as in
        :func:`llmpo.harness.simulate.run_replication`) and the algorithm's and tie coin's.
    max_comparisons : int, optional
        Budget: the run is cut when spent and reports the algorithm's answer so far, if any.
    options : dict, optional
        Further constructor arguments of the duelpy class, by keyword.

    Returns
    -------
    PeerRun
        The answer and the duels used.
    """
    duelpy = import_duelpy()
    name = peer_class_name(strategy)
    env_seed, algorithm_seed = seed.spawn(2)
    environment = SyntheticEnvironment(instance, env_seed)
    coin = np.random.default_rng(algorithm_seed.spawn(1)[0])

    feedback_base: Any = duelpy.feedback.FeedbackMechanism  # a class of the imported module

    class EnvironmentFeedback(feedback_base):
        """duelpy's view of the environment: a boolean per duel, counted."""

        def __init__(self) -> None:
            super().__init__(list(range(instance.n_policies)))
            self.n_duels = 0
            self.counts = np.zeros((instance.n_policies, instance.n_policies))

        def duel(self, arm_i_index: int, arm_j_index: int) -> bool:
            if max_comparisons is not None and self.n_duels >= max_comparisons:
                raise _BudgetSpentError
            self.n_duels += 1
            self.counts[arm_i_index, arm_j_index] += 1
            outcome = environment.outcome(int(arm_i_index), int(arm_j_index))
            return bool(coin.random() < 0.5) if outcome == 0.5 else outcome == 1.0

    feedback = EnvironmentFeedback()
    algorithm_class = getattr(duelpy.algorithms, name)
    arguments: dict[str, Any] = {"feedback_mechanism": feedback, "failure_probability": delta}
    if "random_state" in inspect.signature(algorithm_class).parameters:
        state = int(algorithm_seed.generate_state(1)[0])
        arguments["random_state"] = np.random.RandomState(state)
    algorithm = algorithm_class(**{**arguments, **(options or {})})
    finished = True
    idle_steps = 0
    try:
        # duelpy's own run() loop, plus a guard: a step that asks for no duel cannot change the
        # state, so a peer that takes MAX_IDLE_STEPS such steps in a row would loop forever
        # (it happens to PlackettLucePACItem with ε = 0 once every other arm is pruned while
        # the survivor's bounds against them stay below ½); the run then stops unfinished.
        while not algorithm.is_finished():
            before = feedback.n_duels
            algorithm.step()
            idle_steps = idle_steps + 1 if feedback.n_duels == before else 0
            if idle_steps >= MAX_IDLE_STEPS:
                finished = False
                break
    except _BudgetSpentError:
        finished = False
    answer = getattr(algorithm, PEER_ALGORITHMS[name])()
    if isinstance(answer, list | tuple | set | np.ndarray):
        # A set of (approximate) winners: name one of them by a fair draw.
        candidates = sorted(int(a) for a in answer)
        answer = candidates[int(coin.integers(len(candidates)))] if candidates else None
    best = -1 if answer is None else int(answer)
    symmetric = feedback.counts + feedback.counts.T
    return PeerRun(
        best=best,
        finished=finished and best >= 0,
        n_comparisons=feedback.n_duels,
        pair_counts=symmetric[np.triu_indices(instance.n_policies, 1)],
    )
