"""Reports of stored experiments: one self-contained HTML page, Markdown or JSON.

Contents: the answer with its certificate (per rival: GLR statistic, threshold, comparisons), the
estimated win-probability matrix with pointwise 95% KL confidence intervals (heatmap), the
allocation actually used against the optimal proportions at the estimates, the binding GLR
statistic against its threshold over time, the savings against uniform sampling estimated from T*,
and a table of time and cost per policy. The HTML page embeds its plots as PNG images (matplotlib),
so it can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from typing import Any

import numpy as np

from llmpo.config import ExperimentConfig, stored_config
from llmpo.experiment import DENSE_RESULT_MAX_POLICIES
from llmpo.models.base import PreferenceModel
from llmpo.models.structured import StructuredModel
from llmpo.runner import build_space
from llmpo.stats.bernoulli import kl_lower, kl_upper
from llmpo.stats.thresholds import make_threshold
from llmpo.stats.unstructured import condorcet_winner, optimal_allocation
from llmpo.store import ComparisonRecord, ExperimentRecord, Store

#: Pointwise coverage of the intervals shown on the win-probability matrix.
INTERVAL_LEVEL = 0.95
TRACE_POINTS = 200
HEATMAP_ANNOTATION_LIMIT = 8
ALLOCATION_BARS = 15
#: Large structured runs (more than ``DENSE_RESULT_MAX_POLICIES`` policies): rows shown per table
#: in Markdown/HTML (the JSON report has them all) and policies in the utility plot.
LARGE_TABLE_ROWS = 20
LARGE_UTILITY_PLOT_POINTS = 50
#: Large structured runs: points of the GLR trace (each refits the certificate against every
#: rival; 200 points took about 2 minutes at K = 10,000).
LARGE_TRACE_POINTS = 25


def _trace_checkpoints(total: int, n_points: int = TRACE_POINTS) -> set[int]:
    if total == 0:
        return set()
    points = np.unique(np.geomspace(1, total, num=min(n_points, total)).astype(int))
    return {int(p) for p in points} | {total}


def build_report(store: Store, experiment_id: int | None = None) -> dict[str, Any]:
    """Everything a report shows, as JSON-ready data.

    Parameters
    ----------
    store : Store
        The store (read-only is enough).
    experiment_id : int, optional
        Default: the latest experiment.

    Returns
    -------
    dict
        Keys ``experiment``, ``answer``, ``win_prob``, ``allocation``, ``trace``, ``savings``,
        ``costs``, ``utilities``, ``gain``. A structured run with more than
        ``DENSE_RESULT_MAX_POLICIES`` policies builds no K×K array (as its ``Result``):
        ``win_prob`` is None, ``allocation`` lists the compared pairs only, and the per-rival
        figures of ``answer["rivals"]`` and ``utilities`` stand in for the matrix.
    """
    record = store.experiment(experiment_id)
    config = stored_config(record.config)
    policies = tuple(record.policies)
    space = build_space(config, policies)
    threshold = make_threshold(config.threshold or space.default_threshold)
    model = space.make_model(
        config.delta,
        threshold,
        config.epsilon,
        config.assume_condorcet,
        config.ties_mode,
    )
    # The same rule as Experiment's Result: no K×K matrices for large structured spaces.
    dense = len(policies) <= DENSE_RESULT_MAX_POLICIES or not isinstance(model, StructuredModel)
    comparisons = store.comparisons(record.id)
    checkpoints = _trace_checkpoints(
        len(comparisons), TRACE_POINTS if dense else LARGE_TRACE_POINTS
    )
    trace: list[dict[str, Any]] = []
    for comparison in comparisons:
        model.tell(comparison.policy_a, comparison.policy_b, comparison.outcome)
        if comparison.seq in checkpoints:
            certificate = model.certificate()
            margins = certificate.margins
            binding = int(margins.argmin())
            trace.append(
                {
                    "comparisons": comparison.seq,
                    "leader": policies[certificate.leader],
                    "binding_rival": policies[int(certificate.rivals[binding])],
                    "statistic": float(certificate.statistics[binding]),
                    "threshold": float(certificate.thresholds[binding]),
                }
            )
    if record.result is not None:
        answer = record.result
    else:
        certificate = model.certificate()
        if dense:
            counts = model.counts()
            leader = certificate.leader
            rival_comparisons = [int(counts[leader, int(r)]) for r in certificate.rivals]
        else:
            rival_comparisons = _rival_comparisons(model, certificate.leader, certificate.rivals)
        answer = {
            "best": policies[certificate.leader],
            "best_index": certificate.leader,
            "certified": False,
            "stop_reason": None,
            "n_comparisons": len(comparisons),
            "rivals": [
                {
                    "policy": policies[int(r)],
                    "statistic": float(s),
                    "threshold": float(b),
                    "comparisons": n,
                }
                for r, s, b, n in zip(
                    certificate.rivals,
                    certificate.statistics,
                    certificate.thresholds,
                    rival_comparisons,
                    strict=True,
                )
            ],
            "target_proportions": [
                {"pair": [policies[a], policies[b]], "share": w}
                for a, b, w in model.target_proportions()
            ],
        }
        if not dense:  # as Result: P̂(best ≻ rival) = σ(û_best − û_rival)
            utilities = model.utilities()
            for row, r in zip(answer["rivals"], certificate.rivals, strict=True):
                gap = float(utilities[int(r)] - utilities[certificate.leader])
                row["win_prob_hat"] = 1.0 / (1.0 + math.exp(min(gap, 700.0)))
    targets = answer.get("target_proportions", [])
    win_prob: np.ndarray | None = None
    if dense:
        counts = model.counts()
        win_prob = model.win_prob_hat()
        win_prob_section = _win_prob_section(policies, win_prob, counts)
        allocation = _allocation_section(policies, counts, targets)
    else:
        win_prob_section = None
        allocation = _compared_allocation(policies, model.compared_pairs(), targets)
    events = store.events(record.id)
    dropped = [
        name for _, kind, detail in events if kind == "dense_subset" for name in detail["dropped"]
    ]
    return {
        "experiment": {
            **_experiment_summary(record),
            "threshold": threshold.name,
            "dropped_policies": dropped,
        },
        "events": [{"at": at, "kind": kind, "detail": detail} for at, kind, detail in events],
        "answer": answer,
        "win_prob": win_prob_section,
        "allocation": allocation,
        "trace": trace,
        "savings": (
            None
            if win_prob is None
            else _savings(config, policies, win_prob, answer, len(comparisons))
        ),
        "costs": _costs(policies, comparisons),
        "utilities": _utilities(policies, model),
        "gain": _gain(store, record),
    }


def _rival_comparisons(model: PreferenceModel, leader: int, rivals: np.ndarray) -> list[int]:
    """Comparisons of (leader, rival) per rival, from the compared pairs (no K×K counts)."""
    with_leader = {(a, b): n for a, b, n, _ in model.compared_pairs() if leader in (a, b)}
    return [with_leader.get((min(leader, int(r)), max(leader, int(r))), 0) for r in rivals]


def _compared_allocation(
    policies: tuple[str, ...],
    pairs: list[tuple[int, int, int, float]],
    targets: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The allocation over the pairs actually compared, most compared first (large spaces)."""
    total = sum(n for _, _, n, _ in pairs)
    target = {frozenset(t["pair"]): float(t["share"]) for t in targets}
    rows = [
        {
            "pair": [policies[a], policies[b]],
            "comparisons": int(n),
            "used_share": n / total if total else 0.0,
            "optimal_share": target.get(frozenset((policies[a], policies[b])), 0.0),
        }
        for a, b, n, _ in pairs
    ]
    rows.sort(key=lambda row: (-row["comparisons"], -row["optimal_share"]))
    return rows


def _gain(store: Store, record: ExperimentRecord) -> list[dict[str, Any]]:
    """Held-out evaluations of the winner against the baseline (``llmpo evaluate``)."""
    from llmpo.evaluation import summarize_evaluation

    return [
        evaluation.result or summarize_evaluation(store, evaluation)
        for evaluation in store.evaluations(record.id)
    ]


def _utilities(policies: tuple[str, ...], model: PreferenceModel) -> list[dict[str, Any]] | None:
    """Structured runs: estimated utilities relative to the leader, with 95% Wald intervals."""
    if not isinstance(model, StructuredModel):
        return None
    leader = model.leader
    utilities = model.utilities()
    intervals = model.utility_intervals(INTERVAL_LEVEL)
    return [
        {
            "policy": name,
            "utility_vs_best": float(utilities[k] - utilities[leader]),
            "lower": float(intervals[k, 0]),
            "upper": float(intervals[k, 1]),
        }
        for k, name in enumerate(policies)
    ]


def _experiment_summary(record: ExperimentRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "status": record.status,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "code_version": record.code_version,
        "policies": record.policies,
        "config": record.config,
    }


def _win_prob_section(
    policies: tuple[str, ...], win_prob: np.ndarray, counts: np.ndarray
) -> dict[str, Any]:
    level = np.where(counts > 0, math.log(2 / (1 - INTERVAL_LEVEL)) / np.maximum(counts, 1), 0.0)
    lower = np.where(counts > 0, kl_lower(np.clip(win_prob, 0, 1), level), 0.0)
    upper = np.where(counts > 0, kl_upper(np.clip(win_prob, 0, 1), level), 1.0)
    np.fill_diagonal(lower, 0.5)
    np.fill_diagonal(upper, 0.5)
    return {
        "policies": list(policies),
        "estimate": win_prob.tolist(),
        "lower": np.asarray(lower).tolist(),
        "upper": np.asarray(upper).tolist(),
        "counts": counts.astype(int).tolist(),
        "interval_level": INTERVAL_LEVEL,
    }


def _allocation_section(
    policies: tuple[str, ...], counts: np.ndarray, targets: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    total = counts.sum() / 2
    index = {name: k for k, name in enumerate(policies)}
    target = {
        (
            min(index[t["pair"][0]], index[t["pair"][1]]),
            max(index[t["pair"][0]], index[t["pair"][1]]),
        ): float(t["share"])
        for t in targets
    }
    rows = []
    for a in range(len(policies)):
        for b in range(a + 1, len(policies)):
            used = float(counts[a, b] / total) if total else 0.0
            optimal = target.get((a, b), 0.0)
            if used or optimal:
                rows.append(
                    {
                        "pair": [policies[a], policies[b]],
                        "comparisons": int(counts[a, b]),
                        "used_share": used,
                        "optimal_share": optimal,
                    }
                )
    rows.sort(key=lambda row: -max(row["used_share"], row["optimal_share"]))
    return rows


def _savings(
    config: ExperimentConfig,
    policies: tuple[str, ...],
    win_prob: np.ndarray,
    answer: dict[str, Any],
    used: int,
) -> dict[str, Any] | None:
    """Comparisons uniform sampling would need, estimated from T* at the estimates.

    With the plug-in optimal proportions w* and characteristic time T* of the estimated matrix
    (class A or B as run), a pair with share w needs about w·T*·β comparisons, β the threshold.
    Uniform sampling gives every one of the P pairs the same share, so it needs about
    P·max(w*)·T*·β comparisons before the hardest pair is settled.
    """
    thresholds = [r["threshold"] for r in answer["rivals"] if r["threshold"] is not None]
    if config.space == "structured":  # T* of the structured model: not estimated here
        return None
    if not thresholds or condorcet_winner(win_prob) != policies.index(answer["best"]):
        return None
    try:
        allocation = optimal_allocation(win_prob, config.assume_condorcet, config.epsilon)
    except ValueError:  # an estimate at exactly ½: no finite T*
        return None
    threshold = max(thresholds)
    n_pairs = len(policies) * (len(policies) - 1) / 2
    t_star = allocation.t_star
    t_uniform = float(n_pairs * allocation.proportions.max() * t_star)
    uniform_estimate = t_uniform * threshold
    return {
        "t_star_hat": t_star,
        "t_uniform_hat": t_uniform,
        "threshold": threshold,
        "adaptive_estimate": t_star * threshold,
        "uniform_estimate": uniform_estimate,
        "used": used,
        "saving": 1 - used / uniform_estimate,
    }


def _costs(policies: tuple[str, ...], comparisons: list[ComparisonRecord]) -> dict[str, Any]:
    rows = {
        name: {
            "policy": name,
            "comparisons": 0,
            "wins": 0,
            "ties": 0,
            "losses": 0,
            "seconds": 0.0,
            "cost_usd": None,
            "input_tokens": None,
            "output_tokens": None,
        }
        for name in policies
    }

    def add(row: dict[str, Any], key: str, value: float | None) -> None:
        if value is not None:
            row[key] = (row[key] or 0) + value

    for c in comparisons:
        seconds = (
            c.finished_at - c.started_at
            if c.finished_at is not None and c.started_at is not None
            else 0.0
        )
        for policy, outcome in ((c.policy_a, c.outcome), (c.policy_b, 1 - c.outcome)):
            row = rows[policies[policy]]
            row["comparisons"] += 1
            row["wins" if outcome == 1 else "losses" if outcome == 0 else "ties"] += 1
            row["seconds"] += seconds
            # A comparison's cost is shared by its two policies.
            add(row, "cost_usd", None if c.cost_usd is None else c.cost_usd / 2)
            add(row, "input_tokens", None if c.input_tokens is None else c.input_tokens / 2)
            add(row, "output_tokens", None if c.output_tokens is None else c.output_tokens / 2)
    started = [c.started_at for c in comparisons if c.started_at is not None]
    finished = [c.finished_at for c in comparisons if c.finished_at is not None]
    costs = [c.cost_usd for c in comparisons if c.cost_usd is not None]
    return {
        "per_policy": list(rows.values()),
        "comparisons": len(comparisons),
        "comparison_seconds": float(
            sum(
                c.finished_at - c.started_at
                for c in comparisons
                if c.finished_at is not None and c.started_at is not None
            )
        ),
        "wall_seconds": float(max(finished) - min(started)) if started and finished else None,
        "cost_usd": float(sum(costs)) if costs else None,
    }


# ---- plots ---------------------------------------------------------------------------------------
def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plots(report: dict[str, Any]) -> dict[str, str]:
    """The report's figures as base64 PNG, by name (``win_prob``, ``allocation``, ``trace``)."""
    # Figure objects without pyplot (in the helpers): no GUI backend, no global state.
    figures: dict[str, str] = {}
    section = report["win_prob"]
    if section is not None:
        figures["win_prob"] = _heatmap(section)
    _other_plots(report, figures)
    return figures


def _heatmap(section: dict[str, Any]) -> str:
    from matplotlib.figure import Figure

    names = section["policies"]
    estimate = np.array(section["estimate"])
    counts = np.array(section["counts"])
    size = max(4.0, 0.32 * len(names) + 2)
    figure = Figure(figsize=(size + 1.5, size))
    axes = figure.subplots()
    shown = np.ma.masked_where(counts == 0, estimate)
    np.fill_diagonal(shown.mask, True)
    image = axes.imshow(shown, cmap="RdBu", vmin=0, vmax=1)
    axes.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    axes.set_yticks(range(len(names)), names, fontsize=7)
    axes.set_title("Estimated P(row beats column); grey: not compared")
    axes.set_facecolor("#dddddd")
    figure.colorbar(image, ax=axes, fraction=0.046)
    if len(names) <= HEATMAP_ANNOTATION_LIMIT:
        lower, upper = np.array(section["lower"]), np.array(section["upper"])
        for a in range(len(names)):
            for b in range(len(names)):
                if a != b and counts[a, b]:
                    axes.text(
                        b,
                        a,
                        f"{estimate[a, b]:.2f}\n[{lower[a, b]:.2f}, {upper[a, b]:.2f}]",
                        ha="center",
                        va="center",
                        fontsize=7,
                    )
    return _png(figure)


def _other_plots(report: dict[str, Any], figures: dict[str, str]) -> None:
    from matplotlib.figure import Figure

    rows = report["allocation"][:ALLOCATION_BARS]
    if rows:
        figure = Figure(figsize=(7, 0.3 * len(rows) + 1.5))
        axes = figure.subplots()
        positions = np.arange(len(rows))
        axes.barh(positions - 0.2, [r["used_share"] for r in rows], 0.4, label="used")
        axes.barh(positions + 0.2, [r["optimal_share"] for r in rows], 0.4, label="optimal w*(p̂)")
        axes.set_yticks(positions, [" vs ".join(r["pair"]) for r in rows], fontsize=7)
        axes.invert_yaxis()
        axes.set_xlabel("share of comparisons")
        axes.legend()
        axes.set_title("Allocation used vs optimal proportions")
        figures["allocation"] = _png(figure)

    utilities = report["utilities"]
    if utilities and report["win_prob"] is None:
        figures["utilities"] = _large_utility_plot(utilities)
    elif utilities:
        rows = sorted(utilities, key=lambda u: -u["utility_vs_best"])[:40]
        figure = Figure(figsize=(7, 0.25 * len(rows) + 1.5))
        axes = figure.subplots()
        centre = np.array([u["utility_vs_best"] for u in rows])
        spread = np.array(
            [[c - u["lower"], u["upper"] - c] for c, u in zip(centre, rows, strict=True)]
        )
        axes.errorbar(centre, np.arange(len(rows)), xerr=spread.T, fmt="o", capsize=3)
        axes.set_yticks(range(len(rows)), [u["policy"] for u in rows], fontsize=7)
        axes.invert_yaxis()
        axes.axvline(0, color="grey", linewidth=0.8)
        axes.set_xlabel("estimated utility θ̂ᵀ(x − x_best)")
        axes.set_title("Estimated utilities with 95% intervals (structured model)")
        figures["utilities"] = _png(figure)

    trace = report["trace"]
    if trace:
        figure = Figure(figsize=(7, 4))
        axes = figure.subplots()
        steps = [t["comparisons"] for t in trace]
        axes.plot(steps, [t["statistic"] for t in trace], label="GLR statistic (binding rival)")
        axes.plot(steps, [t["threshold"] for t in trace], label="threshold", linestyle="--")
        axes.set_xscale("log")
        axes.set_xlabel("comparisons")
        axes.legend()
        axes.set_title("Smallest evidence against a rival vs the stopping threshold")
        figures["trace"] = _png(figure)


def _large_utility_plot(utilities: list[dict[str, Any]]) -> str:
    """Many policies: the top ones with their intervals, and a histogram of all utilities."""
    from matplotlib.figure import Figure

    ranked = sorted(utilities, key=lambda u: -u["utility_vs_best"])
    rows = ranked[:LARGE_UTILITY_PLOT_POINTS]
    figure = Figure(figsize=(7, 0.18 * len(rows) + 4.5))
    top, histogram = figure.subplots(
        2, 1, gridspec_kw={"height_ratios": [0.18 * len(rows) + 1, 2.5]}
    )
    centre = np.array([u["utility_vs_best"] for u in rows])
    spread = np.array([[c - u["lower"], u["upper"] - c] for c, u in zip(centre, rows, strict=True)])
    top.errorbar(centre, np.arange(len(rows)), xerr=spread.T, fmt="o", markersize=3, capsize=2)
    top.set_yticks(range(len(rows)), [u["policy"] for u in rows], fontsize=6)
    top.invert_yaxis()
    top.axvline(0, color="grey", linewidth=0.8)
    top.set_xlabel("estimated utility θ̂ᵀ(x − x_best)")
    top.set_title(
        f"Top {len(rows)} of {len(utilities):,} policies by estimated utility, 95% intervals"
    )
    histogram.hist([u["utility_vs_best"] for u in utilities], bins=50)
    histogram.axvline(0, color="grey", linewidth=0.8)
    histogram.set_xlabel("estimated utility relative to the best")
    histogram.set_ylabel("policies")
    histogram.set_title(f"All {len(utilities):,} policies")
    figure.tight_layout()
    return _png(figure)


# ---- rendering -----------------------------------------------------------------------------------
def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def _cost_cells(row: dict[str, Any]) -> list[str]:
    """Policy, comparisons, wins, ties, losses, seconds and USD of a per-policy cost row."""
    return [
        row["policy"],
        str(row["comparisons"]),
        str(row["wins"]),
        str(row["ties"]),
        str(row["losses"]),
        f"{row['seconds']:.2f}",
        _number(row["cost_usd"]),
    ]


def _headline(report: dict[str, Any]) -> str:
    answer = report["answer"]
    experiment = report["experiment"]
    if answer["certified"]:
        delta = experiment["config"]["delta"]
        return (
            f"Best policy: {answer['best']} — certified optimal with probability ≥ "
            f"{1 - delta:g} after {answer['n_comparisons']:,} comparisons."
        )
    reason = (
        "the comparison budget ran out"
        if answer.get("stop_reason") == "budget"
        else (f"the experiment is {experiment['status']}")
    )
    return (
        f"Best policy so far: {answer['best']} — not certified ({reason}) after "
        f"{answer['n_comparisons']:,} comparisons."
    )


def _ruled_out(rival: dict[str, Any]) -> str:
    statistic, threshold = rival["statistic"], rival["threshold"]
    ruled_out = statistic is not None and threshold is not None and statistic > threshold
    return "yes" if ruled_out else "no"


def _margin(rival: dict[str, Any]) -> float:
    """Statistic − threshold; an unbounded statistic (stored as null) is +∞."""
    if rival["statistic"] is None:
        return math.inf
    return rival["statistic"] - (math.inf if rival["threshold"] is None else rival["threshold"])


def _large_tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """Tables of a large structured run: the top rows of each (all of them are in the JSON)."""
    answer = report["answer"]
    shown = LARGE_TABLE_ROWS
    rivals = sorted(answer["rivals"], key=_margin)
    ruled_out = sum(_ruled_out(r) == "yes" for r in rivals)
    certificate = [
        [
            r["policy"],
            _number(r["statistic"]),
            _number(r["threshold"]),
            _number(_margin(r)),
            str(r["comparisons"]),
            _number(r.get("win_prob_hat")),
            _ruled_out(r),
        ]
        for r in rivals[:shown]
    ]
    utilities = sorted(report["utilities"], key=lambda u: -u["utility_vs_best"])
    utility_rows = [
        [u["policy"], f"{u['utility_vs_best']:+.3f}", f"[{u['lower']:+.3f}, {u['upper']:+.3f}]"]
        for u in utilities[:shown]
    ]
    pairs = report["allocation"]
    allocation = [
        [
            " vs ".join(r["pair"]),
            str(r["comparisons"]),
            f"{r['used_share']:.3f}",
            f"{r['optimal_share']:.3f}",
        ]
        for r in pairs[:shown]
    ]
    per_policy = sorted(
        (r for r in report["costs"]["per_policy"] if r["comparisons"]),
        key=lambda r: -r["comparisons"],
    )
    costs = [_cost_cells(r) for r in per_policy[:shown]]

    def rest(total: int, what: str) -> str:
        more = total - min(shown, total)
        return f"; {more:,} more {what} in the JSON report" if more else ""

    return [
        (
            f"Certificate: {ruled_out:,} of {len(rivals):,} rivals ruled out; the "
            f"{len(certificate)} closest to the threshold (smallest statistic − threshold) first"
            + rest(len(rivals), "rivals"),
            [
                "rival",
                "GLR statistic",
                "threshold",
                "statistic − threshold",
                "comparisons with best",
                "P̂(best beats rival)",
                "ruled out",
            ],
            certificate,
        ),
        (
            f"Estimated utilities relative to the best (95% Wald intervals, not anytime-valid): "
            f"top {len(utility_rows)} of {len(utilities):,} policies"
            + rest(len(utilities), "policies"),
            ["policy", "utility − best", "interval"],
            utility_rows,
        ),
        (
            f"Allocation over the {len(pairs):,} compared pairs, most compared first"
            + rest(len(pairs), "pairs"),
            ["pair", "comparisons", "used", "optimal"],
            allocation,
        ),
        (
            f"Time and cost per policy: the {len(costs)} most compared of the {len(per_policy):,} "
            "policies compared (a comparison's cost is split between its two policies)"
            + rest(len(per_policy), "policies"),
            ["policy", "comparisons", "wins", "ties", "losses", "seconds", "cost (USD)"],
            costs,
        ),
    ]


def _tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    if report["win_prob"] is None:
        return _large_tables(report)
    answer = report["answer"]
    certificate = [
        [
            r["policy"],
            _number(r["statistic"]),
            _number(r["threshold"]),
            str(r["comparisons"]),
            "yes"
            if r["statistic"] is not None
            and r["threshold"] is not None
            and r["statistic"] > r["threshold"]
            else "no",
        ]
        for r in answer["rivals"]
    ]
    section = report["win_prob"]
    best = section["policies"].index(answer["best"])
    intervals = [
        [
            name,
            _number(section["estimate"][best][k]),
            f"[{section['lower'][best][k]:.3f}, {section['upper'][best][k]:.3f}]",
            str(section["counts"][best][k]),
        ]
        for k, name in enumerate(section["policies"])
        if k != best
    ]
    allocation = [
        [
            " vs ".join(r["pair"]),
            str(r["comparisons"]),
            f"{r['used_share']:.3f}",
            f"{r['optimal_share']:.3f}",
        ]
        for r in report["allocation"][:ALLOCATION_BARS]
    ]
    costs = [
        [*_cost_cells(r), _number(r["input_tokens"]), _number(r["output_tokens"])]
        for r in report["costs"]["per_policy"]
    ]
    tables = [
        (
            "Certificate",
            ["rival", "GLR statistic", "threshold", "comparisons", "ruled out"],
            certificate,
        ),
        (
            f"Win probability of {answer['best']} ({section['interval_level']:.0%} KL intervals, "
            "pointwise)",
            ["rival", "P(best beats rival)", "interval", "comparisons"],
            intervals,
        ),
        (
            "Allocation used vs optimal proportions",
            ["pair", "comparisons", "used", "optimal"],
            allocation,
        ),
        (
            "Time and cost per policy (a comparison's cost is split between its two policies)",
            [
                "policy",
                "comparisons",
                "wins",
                "ties",
                "losses",
                "seconds",
                "cost (USD)",
                "input tokens",
                "output tokens",
            ],
            costs,
        ),
    ]
    if report["utilities"] is not None:
        rows = [
            [u["policy"], f"{u['utility_vs_best']:+.3f}", f"[{u['lower']:+.3f}, {u['upper']:+.3f}]"]
            for u in sorted(report["utilities"], key=lambda u: -u["utility_vs_best"])
        ]
        tables.insert(
            1,
            (
                "Estimated utilities relative to the best (95% Wald intervals, not anytime-valid)",
                ["policy", "utility − best", "interval"],
                rows,
            ),
        )
    return tables


def _savings_text(report: dict[str, Any]) -> str:
    savings = report["savings"]
    if savings is None:
        return (
            "Savings vs uniform: not estimated (structured run, or the leader does not beat "
            "every rival yet)."
        )
    return (
        f"Savings vs uniform sampling, estimated from T* at the estimates: uniform allocation "
        f"would need about {savings['uniform_estimate']:,.0f} comparisons "
        f"(T̂_uniform = {savings['t_uniform_hat']:,.1f} × threshold {savings['threshold']:.1f}); "
        f"the optimal allocation about {savings['adaptive_estimate']:,.0f} "
        f"(T̂* = {savings['t_star_hat']:,.1f}); this run used {savings['used']:,}, "
        f"a saving of {savings['saving']:.0%}."
    )


def _cost_text(report: dict[str, Any]) -> str:
    costs = report["costs"]
    wall = costs["wall_seconds"]
    money = costs["cost_usd"]
    return (
        f"{costs['comparisons']:,} comparisons; time in comparisons "
        f"{costs['comparison_seconds']:.1f} s"
        + (f"; wall time {wall:.1f} s" if wall is not None else "")
        + (
            f"; cost ${money:.4f}"
            if money is not None
            else "; cost not reported by this environment"
        )
        + "."
    )


def _gain_lines(report: dict[str, Any]) -> list[str]:
    """The "gain over baseline" section: one paragraph per evaluation, latest first."""
    evaluations = report.get("gain") or []
    if not evaluations:
        return [
            "No held-out evaluation yet: llmpo evaluate STORE ID --comparisons N measures the "
            "certified policy against the baseline on tasks the run never used."
        ]
    lines = []
    for summary in reversed(evaluations):
        if summary["comparisons"] == 0:
            lines.append(f"Evaluation {summary['evaluation_id']}: no comparison yet.")
            continue
        low, high = summary["interval"]
        cost = summary["cost_usd"]
        text = (
            f"{summary['sentence']} Evaluation {summary['evaluation_id']} ({summary['status']}): "
            f"{summary['comparisons']:,} comparisons of {summary['winner']} against the "
            f"baseline {summary['baseline']} on held-out tasks — {summary['wins']} wins, "
            f"{summary['ties']} ties, {summary['losses']} losses; win rate (ties ½) "
            f"{summary['win_rate']:.3f}, {summary['level']:.0%} interval [{low:.3f}, {high:.3f}] "
            f"({summary['interval_method']}); "
            + (f"cost ${cost:.4f}." if cost is not None else "cost not reported.")
        )
        if summary.get("caveat"):
            text += f" Note: {summary['caveat']}."
        for name, accuracy in (summary.get("accuracy") or {}).items():
            a_low, a_high = accuracy["interval"]
            text += (
                f" Accuracy of {name}: {accuracy['accuracy']:.3f} ({accuracy['correct']}/"
                f"{accuracy['n']}, interval [{a_low:.3f}, {a_high:.3f}])."
            )
        lines.append(text)
    return lines


def _dropped_text(report: dict[str, Any]) -> str:
    dropped = report["experiment"]["dropped_policies"]
    if not dropped:
        return "Policies: every policy of the configuration took part."
    count = f"{len(dropped)} policy was" if len(dropped) == 1 else f"{len(dropped)} policies were"
    return (
        f"Dense subset: {count} left out of the data because some of their pairs lack records: "
        f"{', '.join(dropped)}."
    )


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown (tables only; the plots are in the HTML report)."""
    experiment = report["experiment"]
    lines = [
        f"# llmpo report — experiment {experiment['id']}"
        + (f" ({experiment['name']})" if experiment["name"] else ""),
        "",
        f"**{_headline(report)}**",
        "",
        f"Status: {experiment['status']}; δ = {experiment['config']['delta']}; "
        f"strategy {experiment['config']['strategy']}; "
        f"threshold {experiment['threshold']}; "
        f"{len(experiment['policies'])} policies; llmpo {experiment['code_version']}.",
        "",
        _savings_text(report),
        "",
        _cost_text(report),
        "",
        _dropped_text(report),
        "",
        "## Gain over baseline",
        "",
    ]
    for line in _gain_lines(report):
        lines += [line, ""]
    for title, header, rows in _tables(report):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += [
            "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows
        ]
        lines.append("")
    return "\n".join(lines)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.answer { font-size: 1.2rem; padding: 0.8rem; background: #eef6ee; border-left: 4px solid #3a3; }
.uncertified { background: #fff4e5; border-left-color: #e90; }
img { max-width: 100%; }
"""


def render_html(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML page, plots embedded as PNG."""
    experiment = report["experiment"]
    escape = html.escape
    title = f"llmpo report — experiment {experiment['id']}" + (
        f" ({experiment['name']})" if experiment["name"] else ""
    )
    css_class = "answer" if report["answer"]["certified"] else "answer uncertified"
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p class='{css_class}' id='answer'>{escape(_headline(report))}</p>",
        f"<p>Status {escape(experiment['status'])}; δ = {experiment['config']['delta']}; strategy "
        f"{escape(experiment['config']['strategy'])}; threshold "
        f"{escape(experiment['threshold'])}; {len(experiment['policies'])} policies; "
        f"llmpo {escape(experiment['code_version'])}; "
        f"created {escape(experiment['created_at'])}.</p>",
        f"<p>{escape(_savings_text(report))}</p>",
        f"<p>{escape(_cost_text(report))}</p>",
        f"<p>{escape(_dropped_text(report))}</p>",
        "<h2 id='gain'>Gain over baseline</h2>",
        *(f"<p>{escape(line)}</p>" for line in _gain_lines(report)),
    ]
    figures = plots(report)
    captions = {
        "win_prob": "Win-probability matrix",
        "allocation": "Allocation used vs optimal proportions",
        "trace": "GLR statistic vs threshold over time",
        "utilities": "Estimated utilities with intervals",
    }
    for title_text, header, rows in _tables(report):
        parts.append(f"<h2>{escape(title_text)}</h2><table><tr>")
        parts += [f"<th>{escape(h)}</th>" for h in header]
        parts.append("</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>")
        parts.append("</table>")
    parts.append("<h2>Plots</h2>")
    for name, data in figures.items():
        parts.append(
            f"<figure><img id='plot-{name}' alt='{escape(captions[name])}' "
            f"src='data:image/png;base64,{data}'><figcaption>{escape(captions[name])}"
            "</figcaption></figure>"
        )
    if report["utilities"] is None:
        parts.append(
            "<h2>Estimated utilities</h2><p>Only for structured experiments; this one is "
            f"{escape(experiment['config']['space'])}.</p>"
        )
    config = experiment["config"]
    if report["win_prob"] is None and isinstance(config.get("policies"), list):
        config = {
            **config,
            "policies": f"{len(config['policies']):,} policies (listed in the JSON report)",
        }
    parts.append(
        "<h2>Configuration</h2><pre>"
        + escape(json.dumps(config, indent=2))
        + "</pre></body></html>"
    )
    return "\n".join(parts)
