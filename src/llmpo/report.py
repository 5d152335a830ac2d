"""Reports of stored experiments: one self-contained HTML page, Markdown or JSON.

Contents, in order: a plain-language summary (who won, how sure, why the run stopped, what it
cost in LLM calls, tokens, dollars and time, and for an unfinished run the command that continues
it); a warning when the judge never told the answers apart; example answers of the best policy
and its closest rival side by side; accuracy per policy for a reference judge; the certificate (per
rival: GLR statistic, threshold, comparisons), the estimated win-probability matrix with
pointwise 95% KL confidence intervals (heatmap), the allocation actually used against the optimal
proportions at the estimates, the binding GLR statistic against its threshold over time, the
comparisons uniform sampling would have needed (certified runs only), and a table of time and cost
per policy. The HTML page (a Jinja2 template) embeds its plots as PNG images (matplotlib), so it
can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path
from typing import Any, TypedDict

import jinja2
import numpy as np

from llmpo.config import ExperimentConfig, stored_config
from llmpo.experiment import DENSE_RESULT_MAX_POLICIES, Experiment
from llmpo.llm.paid import batch_totals, paid_totals, plus_reported
from llmpo.runtime.setup import build_experiment, judge_warning
from llmpo.stats.bernoulli import kl_lower, kl_upper
from llmpo.stats.unstructured import condorcet_winner, optimal_allocation
from llmpo.stats.winrate import clopper_pearson
from llmpo.store import (
    STATUS_TEXT,
    ComparisonRecord,
    ExperimentRecord,
    Store,
)
from llmpo.store.payloads import LiveRaw
from llmpo.store.records import outcome_shares

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
#: Comparisons of the best policy and its closest rival shown side by side, and the longest
#: answer text shown in full (longer ones are cut, with the length said).
EXAMPLES = 3
EXAMPLE_CHARACTERS = 1500


class AccuracyRow(TypedDict):
    """A policy's matches of the reference (reference judges): the report's ``accuracy`` rows."""

    policy: str
    correct: int
    answers: int
    accuracy: float
    interval: list[float]


class AllocationRow(TypedDict):
    """A compared pair's share of the comparisons against its optimal share (``allocation``)."""

    pair: list[str]
    comparisons: int
    used_share: float
    optimal_share: float


class CostRow(TypedDict):
    """What one policy's comparisons cost (``costs["per_policy"]``).

    Wins, ties and losses are whole for verdicts and fractional with preference probabilities
    (:func:`llmpo.store.records.outcome_shares`); a comparison's cost and tokens count half for
    each of its two policies. None: not reported by the environment.
    """

    policy: str
    comparisons: int
    wins: float
    ties: float
    losses: float
    seconds: float
    cost_usd: float | None
    input_tokens: float | None
    output_tokens: float | None


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
        Keys ``summary`` (the plain-language answer), ``experiment``, ``answer``,
        ``judge_warning``, ``examples``, ``accuracy``, ``win_prob``, ``allocation``, ``trace``,
        ``savings``, ``costs``, ``utilities``, ``gain``. A structured run with more than
        ``DENSE_RESULT_MAX_POLICIES`` policies builds no K×K array (as its ``Result``):
        ``win_prob`` is None, ``allocation`` lists the compared pairs only, and the per-rival
        figures of ``answer["rivals"]`` and ``utilities`` stand in for the matrix.
    """
    record = store.experiment(experiment_id)
    config = stored_config(record.config)
    policies = tuple(record.policies)
    comparisons = store.comparisons(record.id)
    # Large structured spaces: fewer trace points (each refits the certificate against every
    # rival), as their Result has no K×K matrices.
    large = config.space == "structured" and len(policies) > DENSE_RESULT_MAX_POLICIES
    checkpoints = _trace_checkpoints(
        len(comparisons), LARGE_TRACE_POINTS if large else TRACE_POINTS
    )
    trace: list[dict[str, Any]] = []

    def traced(n: int, experiment: Experiment) -> None:
        if n in checkpoints:
            certificate = experiment.certificate()
            binding = int(certificate.margins.argmin())
            trace.append(
                {
                    "comparisons": n,
                    "leader": policies[certificate.leader],
                    "binding_rival": policies[int(certificate.rivals[binding])],
                    "statistic": float(certificate.statistics[binding]),
                    "threshold": float(certificate.thresholds[binding]),
                }
            )

    experiment = build_experiment(
        config,
        policies,
        [(c.policy_a, c.policy_b, c.outcome) for c in comparisons],
        on_told=traced,
    )
    result = experiment.result
    # A finished run's stored Result is the experiment's, with what only the runner knew (the
    # cost budget that stopped it, the calls it paid).
    answer = record.result if record.result is not None else result.to_dict()
    targets = answer.get("target_proportions", [])
    win_prob = result.win_prob_hat
    if win_prob is not None and result.counts is not None:
        win_prob_section = _win_prob_section(policies, win_prob, result.counts)
        allocation = _allocation_section(policies, result.counts, targets)
    else:
        win_prob_section = None
        allocation = _compared_allocation(policies, result.compared_pairs, targets)
    events = store.events(record.id)
    dropped = [
        name
        for _, kind, detail in events
        if kind == "dense_subset" and detail is not None
        for name in detail["dropped"]
    ]
    warning = judge_warning(comparisons)
    paid = None
    if config.environment.type == "llm":  # what was paid, as the run reports it
        paid = paid_totals(store, record.id)
    costs = _costs(policies, comparisons, events, paid)
    closest = _closest_rival(answer)
    report = {
        "experiment": {
            **_experiment_summary(record),
            "threshold": result.threshold,
            "dropped_policies": dropped,
        },
        "events": [{"at": at, "kind": kind, "detail": detail} for at, kind, detail in events],
        "answer": answer,
        "judge_warning": warning,
        "examples": _examples(store, config, policies, comparisons, answer["best"], closest),
        "accuracy": _accuracy(policies, comparisons),
        "win_prob": win_prob_section,
        "allocation": allocation,
        "trace": trace,
        "savings": (
            None
            if win_prob is None or not answer["certified"]
            else _savings(config, policies, win_prob, answer, len(comparisons))
        ),
        "costs": costs,
        "utilities": result.to_dict()["utilities"],
        "gain": _gain(store, record),
    }
    report["summary"] = _summary(report, store.path)
    return report


def _closest_rival(answer: dict[str, Any]) -> str | None:
    """The rival nearest to not being ruled out (smallest statistic − threshold)."""
    rivals = answer.get("rivals") or []
    return min(rivals, key=_margin)["policy"] if rivals else None


def _task_texts(config: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """The task rows of a live run by id (empty when the task file is gone or not live)."""
    from llmpo.config import LLMEnvironmentConfig
    from llmpo.llm.tasks import TaskError, load_tasks

    environment = config.environment
    if not isinstance(environment, LLMEnvironmentConfig):
        return {}
    try:
        return {task.id: task.fields for task in load_tasks(environment.tasks)}
    except TaskError:  # moved or deleted since the run: the report shows task ids only
        return {}


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= EXAMPLE_CHARACTERS:
        return text
    return f"{text[:EXAMPLE_CHARACTERS]}… [{len(text):,} characters in all]"


def answer_texts(store: Store, policies: tuple[str, ...], record: ComparisonRecord) -> list[Any]:
    """The two answers of a live comparison (policy a's, then b's) from the generation cache.

    None for an answer that is not there (not a live run, or a store written before the
    request keys were recorded, where the lookup would be ambiguous).
    """
    live = LiveRaw.from_json(record.raw)
    if record.task_id is None or live is None or live.replicates is None:
        return [None, None]
    replicates, keys = live.replicates, live.request_keys
    return [
        store.answer_text(policies[policy], record.task_id, int(replicate), key)
        for policy, replicate, key in zip(
            (record.policy_a, record.policy_b), replicates, keys, strict=True
        )
    ]


def _examples(
    store: Store,
    config: ExperimentConfig,
    policies: tuple[str, ...],
    comparisons: list[ComparisonRecord],
    best: str,
    rival: str | None,
) -> list[dict[str, Any]]:
    """Up to ``EXAMPLES`` comparisons of the best policy and its closest rival, answers included.

    Decisive verdicts first (they show what separates the two), most recent first.
    """
    if rival is None or best not in policies:
        return []
    pair = {policies.index(best), policies.index(rival)}
    chosen = [c for c in reversed(comparisons) if {c.policy_a, c.policy_b} == pair]
    chosen.sort(key=lambda c: c.outcome == 0.5)  # stable: decisive ones first
    tasks = _task_texts(config) if chosen else {}
    examples: list[dict[str, Any]] = []
    for c in chosen[: 20 * EXAMPLES]:  # bounded: a store without answers costs a few lookups
        if len(examples) == EXAMPLES:
            break
        texts = answer_texts(store, policies, c)
        if texts == [None, None]:
            continue  # not a live run, or its answers are not in the store: nothing to show
        best_first = policies[c.policy_a] == best
        best_text, rival_text = texts if best_first else texts[::-1]
        score = c.outcome if best_first else 1 - c.outcome
        fields = tasks.get(c.task_id or "", {})
        examples.append(
            {
                "comparison": c.seq,
                "task_id": c.task_id,
                "task": _clip(None if fields.get("prompt") is None else str(fields["prompt"])),
                "reference": None if fields.get("reference") is None else str(fields["reference"]),
                "best": best,
                "rival": rival,
                "best_answer": _clip(best_text),
                "rival_answer": _clip(rival_text),
                "verdict": best if score == 1 else rival if score == 0 else "tie",
                "judge": c.raw.get("judge") if isinstance(c.raw, dict) else c.raw,
            }
        )
    return examples


def _accuracy(
    policies: tuple[str, ...], comparisons: list[ComparisonRecord]
) -> list[AccuracyRow] | None:
    """Reference judges: share of each policy's answers that matched the reference.

    Every answer of a comparison is a fresh sample, so a policy's matches over its comparisons
    are independent draws of its accuracy on the task distribution; the interval is the exact
    (Clopper–Pearson) 95% one. None when the judge records no match (not a reference judge).
    """
    correct = [0] * len(policies)
    answered = [0] * len(policies)
    for c in comparisons:
        judge = c.raw.get("judge") if isinstance(c.raw, dict) else None
        if not isinstance(judge, dict) or "match_a" not in judge:
            return None
        for policy, key in ((c.policy_a, "match_a"), (c.policy_b, "match_b")):
            answered[policy] += 1
            correct[policy] += bool(judge[key])
    if not comparisons:
        return None
    rows: list[AccuracyRow] = []
    for k, name in enumerate(policies):
        if answered[k]:
            low, high = clopper_pearson(correct[k], answered[k], INTERVAL_LEVEL)
            rows.append(
                AccuracyRow(
                    policy=name,
                    correct=correct[k],
                    answers=answered[k],
                    accuracy=correct[k] / answered[k],
                    interval=[low, high],
                )
            )
    rows.sort(key=lambda row: -row["accuracy"])
    return rows


def _compared_allocation(
    policies: tuple[str, ...],
    pairs: list[tuple[int, int, int, float]],
    targets: list[dict[str, Any]],
) -> list[AllocationRow]:
    """The allocation over the pairs actually compared, most compared first (large spaces)."""
    total = sum(n for _, _, n, _ in pairs)
    target = {frozenset(t["pair"]): float(t["share"]) for t in targets}
    rows = [
        AllocationRow(
            pair=[policies[a], policies[b]],
            comparisons=int(n),
            used_share=n / total if total else 0.0,
            optimal_share=target.get(frozenset((policies[a], policies[b])), 0.0),
        )
        for a, b, n, _ in pairs
    ]
    rows.sort(key=lambda row: (-row["comparisons"], -row["optimal_share"]))
    return rows


def _gain(store: Store, record: ExperimentRecord) -> list[dict[str, Any]]:
    """Held-out evaluations of the winner against the baseline (``llmpo evaluate``)."""
    from llmpo.runtime.evaluation import summarize_evaluation

    return [
        evaluation.result or summarize_evaluation(store, evaluation)
        for evaluation in store.evaluations(record.id)
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
) -> list[AllocationRow]:
    total = counts.sum() / 2
    index = {name: k for k, name in enumerate(policies)}
    target = {
        (
            min(index[t["pair"][0]], index[t["pair"][1]]),
            max(index[t["pair"][0]], index[t["pair"][1]]),
        ): float(t["share"])
        for t in targets
    }
    rows: list[AllocationRow] = []
    for a in range(len(policies)):
        for b in range(a + 1, len(policies)):
            used = float(counts[a, b] / total) if total else 0.0
            optimal = target.get((a, b), 0.0)
            if used or optimal:
                rows.append(
                    AllocationRow(
                        pair=[policies[a], policies[b]],
                        comparisons=int(counts[a, b]),
                        used_share=used,
                        optimal_share=optimal,
                    )
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


def _half(value: float | None) -> float | None:
    return None if value is None else value / 2


def _add(totals: dict[str, float | None], key: str, value: float | None) -> None:
    totals[key] = plus_reported(totals[key], value)


def _costs(
    policies: tuple[str, ...],
    comparisons: list[ComparisonRecord],
    events: list[tuple[str, str, Any]] | None = None,
    paid: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the run cost: per policy, and in all (LLM calls, tokens, dollars, time).

    A comparison's time is from its start to its verdict; comparisons run concurrently, so the
    per-policy sums add up overlapping intervals and can exceed the run's wall time; a
    comparison's tokens and dollars are the calls it was charged, half to each policy. The
    totals of a live run are what it paid (``paid``, from :func:`llmpo.llm.paid.paid_totals`:
    every call, invalid verdicts and rounds that were never told included); otherwise the sums
    over the comparisons and invalid verdicts.
    """
    rows = {
        name: CostRow(
            policy=name,
            comparisons=0,
            wins=0,
            ties=0,
            losses=0,
            seconds=0.0,
            cost_usd=None,
            input_tokens=None,
            output_tokens=None,
        )
        for name in policies
    }
    totals: dict[str, float | None] = {
        "generation_calls": None,
        "judge_calls": None,
        "input_tokens": None,
        "output_tokens": None,
    }
    for c in comparisons:
        seconds = (
            c.finished_at - c.started_at
            if c.finished_at is not None and c.started_at is not None
            else 0.0
        )
        for policy, outcome in ((c.policy_a, c.outcome), (c.policy_b, 1 - c.outcome)):
            row = rows[policies[policy]]
            row["comparisons"] += 1
            win, tie, loss = (
                int(share) if share.is_integer() else share  # verdicts stay counts
                for share in outcome_shares(outcome)
            )
            row["wins"] += win
            row["ties"] += tie
            row["losses"] += loss
            row["seconds"] += seconds
            # A comparison's cost is shared by its two policies.
            row["cost_usd"] = plus_reported(row["cost_usd"], _half(c.cost_usd))
            row["input_tokens"] = plus_reported(row["input_tokens"], _half(c.input_tokens))
            row["output_tokens"] = plus_reported(row["output_tokens"], _half(c.output_tokens))
        _add(totals, "input_tokens", c.input_tokens)
        _add(totals, "output_tokens", c.output_tokens)
    invalid = [detail for _, kind, detail in events or [] if kind == "invalid_verdict"]
    started = [c.started_at for c in comparisons if c.started_at is not None]
    finished = [c.finished_at for c in comparisons if c.finished_at is not None]
    costs = [c.cost_usd for c in comparisons if c.cost_usd is not None]
    costs += [d["cost_usd"] for d in invalid if d.get("cost_usd") is not None]
    cost_usd = float(sum(costs)) if costs else None
    if paid is not None:
        totals = {key: paid[key] for key in totals}
        cost_usd = paid["cost_usd"]
    return {
        # requests the run (not an evaluation) sent through a batch API, at the batch price
        **batch_totals(events or []),
        "per_policy": list(rows.values()),
        "comparisons": len(comparisons),
        "invalid_verdicts": len(invalid),
        **totals,
        "comparison_seconds": float(
            sum(
                c.finished_at - c.started_at
                for c in comparisons
                if c.finished_at is not None and c.started_at is not None
            )
        ),
        "wall_seconds": float(max(finished) - min(started)) if started and finished else None,
        "cost_usd": cost_usd,
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
    hidden = counts == 0
    np.fill_diagonal(hidden, True)
    shown = np.ma.masked_array(estimate, mask=hidden)
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
#: A table of the report: title, header, rows, and a note saying what its columns mean.
Table = tuple[str, list[str], list[list[str]], str]


def _number(value: Any, digits: int = 3) -> str:
    """A statistic: ``digits`` significant digits, never in scientific notation."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "∞" if value > 0 else "−∞"
        if abs(value) >= 10 ** (digits - 1):
            return f"{value:,.0f}"
        decimals = max(0, digits - 1 - math.floor(math.log10(abs(value)))) if value else 0
        return f"{value:,.{min(decimals, 6)}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _count(value: float | None) -> str:
    """Calls, tokens, comparisons: whole numbers with thousands separators."""
    return "—" if value is None else f"{value:,.0f}"


def _usd(value: float | None) -> str:
    if value is None:
        return "—"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def _duration(seconds: float | None) -> str:
    """``42.0 s``, ``13 min 27 s``, ``2 h 05 min``."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours:,} h {minutes:02d} min"


def _cost_cells(row: dict[str, Any]) -> list[str]:
    """Policy, comparisons, wins, ties, losses, summed seconds and USD of a per-policy row."""
    return [
        row["policy"],
        _count(row["comparisons"]),
        _count(row["wins"]),
        _count(row["ties"]),
        _count(row["losses"]),
        f"{row['seconds']:,.1f}",
        _usd(row["cost_usd"]),
    ]


def _spent(costs: dict[str, Any], detail: bool = True) -> str:
    """What the run cost as users pay it: "688 LLM calls (…), 45,120 tokens (…), $0.12, 13 min".

    Without ``detail`` the parenthesized breakdowns are left out (for the summary sentence).
    """
    parts = []
    if costs.get("generation_calls") is not None:
        generation, judge = costs["generation_calls"], costs.get("judge_calls") or 0
        calls = f"{generation + judge:,} LLM calls"
        if detail:
            calls += (
                f" ({generation:,} answers, {judge:,} by the judge)"
                if judge
                else " (all answers; the judge made none)"
            )
        parts.append(calls)
    tokens = [costs.get(key) for key in ("input_tokens", "output_tokens")]
    if any(t is not None for t in tokens):
        parts.append(
            f"{sum(t or 0 for t in tokens):,.0f} tokens"
            + (f" ({_count(tokens[0])} in, {_count(tokens[1])} out)" if detail else "")
        )
    if costs.get("cost_usd") is not None:
        parts.append(_usd(costs["cost_usd"]))
        if costs.get("batch_requests"):
            parts[-1] += (
                f" at batch pricing ({costs['batch_requests']:,} requests in "
                f"{costs['batch_jobs']:,} batch jobs)"
                if detail
                else " at batch pricing"
            )
    if costs.get("wall_seconds") is not None:
        parts.append(_duration(costs["wall_seconds"]))
    return ", ".join(parts)


def _summary(report: dict[str, Any], store_path: Path) -> dict[str, Any]:
    """The plain-language answer: who won, how sure, why it stopped, what it cost, what next."""
    answer, experiment = report["answer"], report["experiment"]
    status = experiment["status"]
    confidence = 1 - float(experiment["config"]["delta"])
    n_policies = len(experiment["policies"])
    spent = _spent(report["costs"], detail=False)
    cost = f" ({spent})" if spent else ""
    comparisons = f"{answer['n_comparisons']:,} comparisons{cost}"
    warning = report.get("judge_warning")
    winner = None if warning else (answer["best"] if answer["certified"] else None)
    next_step = None
    if warning:
        sentence = f"No winner: {warning}. The run made {comparisons}."
    elif answer["certified"]:
        sentence = (
            f"{answer['best']} is the best of {n_policies} policies, with {confidence:.0%} "
            f"confidence, after {comparisons}."
        )
    else:
        reason = STATUS_TEXT.get(status, status)
        rival = _closest_rival(answer)
        lead = (
            f" {answer['best']} leads so far"
            + (f"; its closest rival is {rival}" if rival else "")
            + ", but a leader is not a certified winner."
        )
        sentence = f"No policy is certified yet: {reason} after {comparisons}." + lead
        where = f"{store_path} {experiment['id']}"
        if status == "max_comparisons":
            budget = experiment["config"].get("max_comparisons") or answer["n_comparisons"]
            next_step = (
                "To continue with a larger budget: llmpo run CONFIG --resume "
                f"--max-comparisons {2 * int(budget):,}".replace(",", "")
            )
        elif status == "max_cost":
            budget = experiment["config"].get("max_cost") or 0
            next_step = (
                f"To continue with a larger budget: llmpo run CONFIG --resume --max-cost "
                f"{2 * float(budget):g}"
            )
        elif status in ("interrupted", "failed", "running"):
            next_step = f"To continue: llmpo resume {where}"
    return {
        "sentence": sentence,
        "winner": winner,
        "leader": answer["best"],
        "certified": bool(answer["certified"]) and not warning,
        "confidence": confidence,
        "status": status,
        "status_text": STATUS_TEXT.get(status, status),
        "next_step": next_step,
        "spent": spent,
    }


def _headline(report: dict[str, Any]) -> str:
    answer = report["answer"]
    if report.get("judge_warning"):
        return f"No winner: {report['judge_warning']}."
    if answer["certified"]:
        delta = report["experiment"]["config"]["delta"]
        return (
            f"Best policy: {answer['best']} — certified optimal with probability ≥ "
            f"{1 - delta:g} after {answer['n_comparisons']:,} comparisons."
        )
    reason = STATUS_TEXT.get(report["experiment"]["status"], report["experiment"]["status"])
    return (
        f"Best policy so far: {answer['best']} — not certified: {reason} after "
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


CERTIFICATE_NOTE = (
    "GLR statistic: the evidence, from the comparisons so far, that the best policy beats this "
    "rival; threshold: the evidence needed for the confidence asked. A rival is ruled out once "
    "its statistic exceeds its threshold; the best is certified when every rival is."
)
TIME_NOTE = (
    "seconds: time from each comparison's start to its verdict, summed over the policy's "
    "comparisons. Comparisons run concurrently, so these sums overlap and can exceed the run's "
    "wall time. Cost and tokens of a comparison are split evenly between its two policies."
)
ALLOCATION_NOTE = (
    "used: share of the comparisons spent on the pair; optimal: the share that settles the "
    "question fastest if the current estimates are right."
)
UTILITY_NOTE = (
    "utility − best: estimated strength relative to the best policy (0 for the best itself); "
    "the 95% intervals are approximate and do not account for adaptive stopping."
)


def _accuracy_table(report: dict[str, Any]) -> list[Table]:
    rows = report.get("accuracy")
    if not rows:
        return []
    return [
        (
            "Accuracy per policy (reference judge)",
            ["policy", "accuracy", f"{INTERVAL_LEVEL:.0%} interval", "correct", "answers"],
            [
                [
                    r["policy"],
                    f"{r['accuracy']:.1%}",
                    f"{r['interval'][0]:.1%} – {r['interval'][1]:.1%}",
                    _count(r["correct"]),
                    _count(r["answers"]),
                ]
                for r in rows
            ],
            "accuracy: share of the policy's answers that matched the reference; the interval is "
            "the exact (Clopper–Pearson) one, each answer being a fresh sample.",
        )
    ]


def _large_tables(report: dict[str, Any]) -> list[Table]:
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
            _count(r["comparisons"]),
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
            _count(r["comparisons"]),
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
            CERTIFICATE_NOTE,
        ),
        (
            f"Estimated utilities relative to the best (95% Wald intervals, not anytime-valid): "
            f"top {len(utility_rows)} of {len(utilities):,} policies"
            + rest(len(utilities), "policies"),
            ["policy", "utility − best", "interval"],
            utility_rows,
            UTILITY_NOTE,
        ),
        (
            f"Allocation over the {len(pairs):,} compared pairs, most compared first"
            + rest(len(pairs), "pairs"),
            ["pair", "comparisons", "used", "optimal"],
            allocation,
            ALLOCATION_NOTE,
        ),
        (
            f"Time and cost per policy: the {len(costs)} most compared of the {len(per_policy):,} "
            "policies compared" + rest(len(per_policy), "policies"),
            ["policy", "comparisons", "wins", "ties", "losses", "seconds (summed)", "cost (USD)"],
            costs,
            TIME_NOTE,
        ),
    ]


def _tables(report: dict[str, Any]) -> list[Table]:
    if report["win_prob"] is None:
        return _accuracy_table(report) + _large_tables(report)
    answer = report["answer"]
    certificate = [
        [
            r["policy"],
            _number(r["statistic"]),
            _number(r["threshold"]),
            _count(r["comparisons"]),
            _ruled_out(r),
        ]
        for r in answer["rivals"]
    ]
    section = report["win_prob"]
    best = section["policies"].index(answer["best"])
    intervals = [
        [
            name,
            f"{section['estimate'][best][k]:.3f}",
            f"[{section['lower'][best][k]:.3f}, {section['upper'][best][k]:.3f}]",
            _count(section["counts"][best][k]),
        ]
        for k, name in enumerate(section["policies"])
        if k != best
    ]
    allocation = [
        [
            " vs ".join(r["pair"]),
            _count(r["comparisons"]),
            f"{r['used_share']:.3f}",
            f"{r['optimal_share']:.3f}",
        ]
        for r in report["allocation"][:ALLOCATION_BARS]
    ]
    costs = [
        [*_cost_cells(r), _count(r["input_tokens"]), _count(r["output_tokens"])]
        for r in report["costs"]["per_policy"]
    ]
    tables: list[Table] = [
        *_accuracy_table(report),
        (
            "Certificate",
            ["rival", "GLR statistic", "threshold", "comparisons", "ruled out"],
            certificate,
            CERTIFICATE_NOTE,
        ),
        (
            f"Win probability of {answer['best']} ({section['interval_level']:.0%} KL intervals, "
            "pointwise)",
            ["rival", "P(best beats rival)", "interval", "comparisons"],
            intervals,
            "P(best beats rival): the estimated chance that the best policy's answer is preferred "
            "to the rival's on a random task (ties count ½); each interval holds on its own.",
        ),
        (
            "Allocation used vs optimal proportions",
            ["pair", "comparisons", "used", "optimal"],
            allocation,
            ALLOCATION_NOTE,
        ),
        (
            "Time and cost per policy",
            [
                "policy",
                "comparisons",
                "wins",
                "ties",
                "losses",
                "seconds (summed)",
                "cost (USD)",
                "input tokens",
                "output tokens",
            ],
            costs,
            TIME_NOTE,
        ),
    ]
    if report["utilities"] is not None:
        rows = [
            [u["policy"], f"{u['utility_vs_best']:+.3f}", f"[{u['lower']:+.3f}, {u['upper']:+.3f}]"]
            for u in sorted(report["utilities"], key=lambda u: -u["utility_vs_best"])
        ]
        tables.insert(
            len(tables) - 3,
            (
                "Estimated utilities relative to the best (95% Wald intervals, not anytime-valid)",
                ["policy", "utility − best", "interval"],
                rows,
                UTILITY_NOTE,
            ),
        )
    return tables


def _savings_text(report: dict[str, Any]) -> str:
    savings = report["savings"]
    if not report["answer"]["certified"]:
        return "Saving: none is claimed, since the run is not certified."
    if savings is None:
        return (
            "Saving: not estimated (a structured run, or the best policy does not yet beat "
            "every rival in the estimates)."
        )
    n = len(report["experiment"]["policies"])
    return (
        f"Saving: comparing every pair of the {n} policies equally often would have needed "
        f"about {savings['uniform_estimate']:,.0f} comparisons to reach the same confidence "
        f"(estimated from these results); this run used {savings['used']:,}, "
        f"{savings['saving']:.0%} fewer."
        if savings["saving"] > 0
        else f"Saving: none; this run used {savings['used']:,} comparisons, and comparing every "
        f"pair equally often would have needed about {savings['uniform_estimate']:,.0f} "
        "(estimated from these results)."
    )


def _cost_text(report: dict[str, Any]) -> str:
    costs = report["costs"]
    parts = [f"{costs['comparisons']:,} comparisons"]
    if costs.get("invalid_verdicts"):
        parts.append(f"{costs['invalid_verdicts']:,} invalid verdicts (paid for, not counted)")
    spent = _spent({**costs, "wall_seconds": None})
    if spent:
        parts.append(spent)
    if costs["cost_usd"] is None:
        parts.append("dollars not reported (no prices configured, or not a live run)")
    if costs["wall_seconds"] is not None:
        parts.append(
            f"elapsed {_duration(costs['wall_seconds'])} from the first comparison to the last "
            "verdict (pauses between resumed runs included)"
        )
    parts.append(
        f"{_duration(costs['comparison_seconds'])} of comparison time summed over concurrent "
        "comparisons"
    )
    return "Cost: " + "; ".join(parts) + "."


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
            + (f"cost {_usd(cost)}." if cost is not None else "cost not reported.")
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


def _settings_text(report: dict[str, Any]) -> str:
    experiment = report["experiment"]
    config = experiment["config"]
    return (
        f"Settings: confidence {1 - config['delta']:.0%} (δ = {config['delta']}); sampling rule "
        f"{config['strategy']}; stopping threshold {experiment['threshold']}; "
        f"{len(experiment['policies'])} policies; status {experiment['status']}; llmpo "
        f"{experiment['code_version']}; created {experiment['created_at']}."
    )


def _verdict_text(example: dict[str, Any]) -> str:
    if example["verdict"] == "tie":
        return "Verdict: tie."
    return f"Verdict: {example['verdict']}'s answer is better."


def _examples_title(report: dict[str, Any]) -> str | None:
    examples = report.get("examples") or []
    if not examples:
        return None
    first = examples[0]
    return f"Example answers: {first['best']} and its closest rival {first['rival']}"


def _missing(text: str | None) -> str:
    return text if text is not None else "(answer text not stored)"


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown (tables only; the plots are in the HTML report)."""
    experiment = report["experiment"]
    summary = report["summary"]
    lines = [
        f"# llmpo report — experiment {experiment['id']}"
        + (f" ({experiment['name']})" if experiment["name"] else ""),
        "",
        f"**{summary['sentence']}**",
        "",
    ]
    if report.get("judge_warning"):
        lines += [f"> **Warning:** {report['judge_warning']}.", ""]
    if summary["next_step"]:
        lines += [f"{summary['next_step']}", ""]
    lines += [
        _headline(report),
        "",
        _cost_text(report),
        "",
        _savings_text(report),
        "",
        _settings_text(report),
        "",
        _dropped_text(report),
        "",
    ]
    title = _examples_title(report)
    if title:
        lines += [f"## {title}", ""]
        for example in report["examples"]:
            lines += [
                f"### Task {example['task_id']} (comparison {example['comparison']})",
                "",
                *([f"Task: {example['task']}", ""] if example["task"] else []),
                *([f"Reference: {example['reference']}", ""] if example["reference"] else []),
                f"| {example['best']} | {example['rival']} |",
                "|---|---|",
                "| "
                + " | ".join(
                    _missing(t).replace("|", "\\|").replace("\n", "<br>")
                    for t in (example["best_answer"], example["rival_answer"])
                )
                + " |",
                "",
                _verdict_text(example),
                "",
            ]
    lines += ["## Gain over baseline", ""]
    for line in _gain_lines(report):
        lines += [line, ""]
    for title_text, header, rows, note in _tables(report):
        lines += [
            f"## {title_text}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        lines += [
            "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows
        ]
        lines += ["", f"*{note}*", ""]
    # Names and answers come from users and models: no raw HTML may reach a Markdown viewer.
    return "\n".join(lines).replace("<", "&lt;")


_PAGES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)
PLOT_CAPTIONS = {
    "win_prob": "Win-probability matrix",
    "allocation": "Allocation used vs optimal proportions",
    "trace": "GLR statistic vs threshold over time",
    "utilities": "Estimated utilities with intervals",
}


def render_html(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML page (``templates/report.html``), plots as PNG."""
    experiment = report["experiment"]
    title = f"llmpo report — experiment {experiment['id']}" + (
        f" ({experiment['name']})" if experiment["name"] else ""
    )
    config = experiment["config"]
    if report["win_prob"] is None and isinstance(config.get("policies"), list):
        config = {
            **config,
            "policies": f"{len(config['policies']):,} policies (listed in the JSON report)",
        }
    return _PAGES.get_template("report.html").render(
        title=title,
        summary=report["summary"],
        certified=report["summary"]["certified"],
        warning=report.get("judge_warning"),
        headline=_headline(report),
        paragraphs=[
            _cost_text(report),
            _savings_text(report),
            _settings_text(report),
            _dropped_text(report),
        ],
        examples_title=_examples_title(report),
        examples=report.get("examples") or [],
        verdict_text=_verdict_text,
        missing=_missing,
        gain=_gain_lines(report),
        tables=_tables(report),
        figures=plots(report),
        captions=PLOT_CAPTIONS,
        config=json.dumps(config, indent=2),
    )
