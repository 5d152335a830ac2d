"""Where an experiment's certificate stands, followed live by replaying its stored comparisons.

A :class:`Tracker` rebuilds the experiment from its stored configuration (the same
:func:`~llmpo.runtime.setup.build_experiment` as ``llmpo run``) and tells it the comparisons
appended since its last update, for at most ``budget`` seconds per update, so that a page of a
huge store answers quickly and catches up over the next polls (replay runs at a few thousand
comparisons a second: the certificate of a 10⁶-comparison run takes minutes to replay; its totals
and comparison pages do not wait for it). It keeps, per rival of the leader, the GLR statistic and
threshold at geometrically spaced numbers of comparisons (the trace the page plots) and the
wins, ties and losses of every pair.
"""

from __future__ import annotations

import math
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmpo.config import ExperimentConfig
from llmpo.experiment import Experiment
from llmpo.runtime.setup import build_experiment, remaining_range
from llmpo.store import ExperimentRecord
from llmpo.store.records import outcome_shares
from llmpo.store.views import RUNS, last_seq, outcomes_after

#: Structured space: policies shown with their estimated utility (the best first).
UTILITY_ROWS = 20
#: Seconds of replay per update, and comparisons read at a time.
BUDGET_SECONDS = 0.15
CHUNK = 1000
#: Every comparison is a point of the trace up to this many; then one point per 2% growth.
DENSE_TRACE = 50
TRACE_GROWTH = 1.02


@dataclass
class TracePoint:
    """The certificate after ``n`` comparisons: per rival name, (statistic, threshold)."""

    n: int
    leader: str
    rivals: dict[str, tuple[float, float]]


@dataclass
class Tracker:
    """The replayed state of one experiment of a store."""

    record: ExperimentRecord
    config: ExperimentConfig
    experiment: Experiment
    last_seq: int = 0
    total: int = 0
    trace: list[TracePoint] = field(default_factory=list)
    #: (i, j) with i < j → [wins of i, ties, wins of j]; a fractional outcome y of i counts
    #: (2y − 1)⁺ as a win of i, (1 − 2y)⁺ as a win of j and the rest as a tie (docs/ties.md).
    pairs: dict[tuple[int, int], list[float]] = field(default_factory=dict)

    @classmethod
    def of(cls, record: ExperimentRecord) -> Tracker:
        """A tracker at zero comparisons.

        Raises
        ------
        ConfigError, ValueError
            When the stored configuration no longer builds an experiment.
        """
        config = ExperimentConfig.model_validate(record.config)
        return cls(record, config, build_experiment(config, tuple(record.policies)))

    def update(self, connection: sqlite3.Connection, budget: float = BUDGET_SECONDS) -> Tracker:
        """Tell the comparisons stored since the last update, for at most ``budget`` seconds."""
        self.total = last_seq(connection, RUNS, self.record.id)
        deadline = time.perf_counter() + budget
        told = False
        while self.last_seq < self.total and time.perf_counter() < deadline:
            rows = outcomes_after(connection, RUNS, self.record.id, self.last_seq, CHUNK)
            if not rows:
                break
            told = True
            for seq, a, b, outcome in rows:
                self._tell(seq, a, b, outcome)
        if told and self.trace and self.trace[-1].n != self.experiment.n_comparisons:
            self._point()  # the current state closes the trace
        return self

    def _tell(self, seq: int, a: int, b: int, outcome: float) -> None:
        self.last_seq = seq
        low, high = (a, b) if a < b else (b, a)
        tally = self.pairs.setdefault((low, high), [0.0, 0.0, 0.0])
        score = outcome if a == low else 1.0 - outcome
        for side, share in enumerate(outcome_shares(score)):
            tally[side] += share
        if self.experiment.done:  # comparisons in flight when it certified: not told
            return
        self.experiment.tell(a, b, outcome)
        if seq <= DENSE_TRACE or not self.trace or seq >= self.trace[-1].n * TRACE_GROWTH:
            self._point()

    @property
    def catching_up(self) -> bool:
        return self.last_seq < self.total

    def _point(self) -> None:
        result = self.experiment.result
        self.trace.append(
            TracePoint(
                result.n_comparisons,
                result.best_name,
                {
                    result.policies[r]: (float(s), float(b))
                    for r, s, b in zip(
                        result.rivals, result.statistics, result.thresholds, strict=True
                    )
                },
            )
        )

    def snapshot(self) -> dict[str, Any]:
        """What the live page shows, JSON-ready."""
        result = self.experiment.result
        best = result.best
        rivals = []
        for index, (r, s, b) in enumerate(
            zip(result.rivals, result.statistics, result.thresholds, strict=True)
        ):
            low, high = (best, r) if best < r else (r, best)
            wins, ties, losses = (_count(x) for x in self.pairs.get((low, high), [0, 0, 0]))
            if best != low:
                wins, losses = losses, wins
            rivals.append(
                {
                    "policy": result.policies[r],
                    "comparisons": wins + ties + losses,
                    "wins": wins,
                    "ties": ties,
                    "losses": losses,
                    "win_rate": (
                        float(result.rival_win_prob[index]) if result.rival_win_prob else None
                    ),
                    "statistic": _finite(s),
                    "threshold": _finite(b),
                    "passed": bool(s > b),
                    "progress": float(min(max(s / b, 0.0), 1.0))
                    if b > 0 and math.isfinite(s)
                    else (1.0 if s > b else 0.0),
                }
            )
        told = max(result.n_comparisons, 1)
        counts = result.counts
        allocation = [
            {
                "pair": (result.policies[a], result.policies[b]),
                "target": float(w),
                "actual": None if counts is None else float(counts[a, b]) / told,
            }
            for a, b, w in sorted(result.target_proportions, key=lambda t: -t[2])[:12]
        ]
        remaining = (
            None
            if self.experiment.done or self.catching_up
            else remaining_range(self.experiment)
        )
        utilities = []
        if result.utilities is not None and result.utility_intervals is not None:
            order = np.argsort(-result.utilities, kind="stable")[:UTILITY_ROWS]
            utilities = [
                {
                    "policy": result.policies[i],
                    "utility": float(result.utilities[i]),
                    "low": float(result.utility_intervals[i, 0]),
                    "high": float(result.utility_intervals[i, 1]),
                }
                for i in order
            ]
        effects = []
        if result.feature_effects is not None:
            names = getattr(self.experiment.space, "feature_names", ())
            effects = [
                {"feature": name, "effect": float(e), "low": float(low), "high": float(high)}
                for name, (e, low, high) in zip(names, result.feature_effects, strict=True)
            ]
        return {
            "leader": result.best_name,
            "effects": effects,
            # Comparisons still needed: the estimate and its 80% range (high None: unbounded).
            "remaining": None if remaining is None else remaining[0],
            "remaining_low": None if remaining is None else remaining[1],
            "remaining_high": None if remaining is None else remaining[2],
            "utilities": utilities,
            "certified": result.certified,
            "stop_reason": result.stop_reason,
            "replayed": self.last_seq,
            "total": self.total,
            "told": result.n_comparisons,
            "delta": result.delta,
            "threshold": result.threshold,
            "rivals": rivals,
            "allocation": allocation,
        }


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


#: Colours of the plot's series (one per rival, cycling), readable on white.
PALETTE = ("#2f6fde", "#a34ad8", "#1f9d55", "#d9480f", "#0b7285", "#c2255c", "#5f3dc4", "#e67700")


def plot(trace: list[TracePoint], width: int = 720, height: int = 260) -> dict[str, Any]:
    """An SVG line plot of each rival's statistic (solid) and threshold (dashed) against the
    number of comparisons, as coordinates for the template (drawn server-side: no script)."""
    if not trace:
        return {"width": width, "height": height, "series": [], "ticks": []}
    left, right, top, bottom = 48, 12, 10, 28
    names: list[str] = []
    for point in trace:
        names += [n for n in point.rivals if n not in names]
    finite = [v for p in trace for pair in p.rivals.values() for v in pair if math.isfinite(v)]
    y_max = max([*finite, 1.0]) * 1.05
    x_max = max(trace[-1].n, 1)

    def xy(n: int, value: float) -> str:
        x = left + (width - left - right) * n / x_max
        shown = min(value, y_max) if math.isfinite(value) else y_max
        y = top + (height - top - bottom) * (1 - max(shown, 0.0) / y_max)
        return f"{x:.1f},{y:.1f}"

    series = []
    for k, name in enumerate(names):
        points = [(p.n, p.rivals[name]) for p in trace if name in p.rivals]
        series.append(
            {
                "name": name,
                "colour": PALETTE[k % len(PALETTE)],
                "statistic": " ".join(xy(n, s) for n, (s, _) in points),
                "threshold": " ".join(xy(n, b) for n, (_, b) in points),
            }
        )
    ticks = [
        {"y": float(xy(0, v).split(",")[1]), "label": f"{v:.3g}"}
        for v in np.linspace(0, y_max / 1.05, 4)
    ]
    return {
        "width": width,
        "height": height,
        "series": series,
        "ticks": ticks,
        "x_max": x_max,
        "left": left,
        "bottom": height - bottom,
        "right": width - right,
    }


def _count(value: float) -> float:
    """A tally as shown: a whole number as an int, else to two decimals."""
    return int(value) if float(value).is_integer() else round(value, 2)
