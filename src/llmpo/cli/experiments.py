"""Commands for real experiments: ``run``, ``resume``, ``report`` and ``export``."""

from __future__ import annotations

import json
import math
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.table import Table
from rich.text import Text

from llmpo.cli import app
from llmpo.cli import fail as _fail
from llmpo.cli.common import error_console
from llmpo.errors import ConfigError
from llmpo.llm.loading import LoadStep, watching_loads
from llmpo.registry import STRATEGIES
from llmpo.remaining import rival_needs
from llmpo.store import STATUS_TEXT, ExperimentRecord, Store

# The commands' options are declared without these (pydantic, numpy, scipy, jinja2): a command's
# --help imports none of them (tests/cli/test_startup.py); each command imports what it runs.
if TYPE_CHECKING:
    from llmpo.config import ExperimentConfig
    from llmpo.runtime.evaluation import EvaluationProgress
    from llmpo.runtime.setup import Progress, RunOutcome, Usage


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")]
StoreArg = Annotated[Path, typer.Argument(help="The SQLite store file.")]
IdArg = Annotated[
    int | None, typer.Argument(help="Experiment id (default: the latest in the store).")
]
#: The id as an option: the older spelling of export and serve, kept working with a warning.
DeprecatedIdOpt = Annotated[
    int | None,
    typer.Option("--experiment", hidden=True, help="Deprecated: give the id after the store."),
]


def experiment_id_of(command: str, positional: int | None, option: int | None) -> int | None:
    """The experiment id a command names: after the store (the one way), or by the deprecated
    ``--experiment`` (with a warning); both must agree."""
    if option is None:
        return positional
    if positional is not None and positional != option:
        raise _fail(
            f"two experiment ids, {positional} and --experiment {option}. Fix: give one, after "
            f"the store: llmpo {command} STORE ID"
        )
    error_console.print(
        f"[bold yellow]warning:[/] --experiment is deprecated; give the id after the store: "
        f"llmpo {command} STORE {option}",
        highlight=False,
    )
    return option


class ReportFormat(StrEnum):
    """Formats of ``llmpo report``."""

    html = "html"
    md = "md"
    json = "json"


class ExportFormat(StrEnum):
    """Formats of ``llmpo export``."""

    csv = "csv"
    parquet = "parquet"


def _progress_line(progress: Progress) -> str:
    budget = f"/{progress.max_comparisons:,}" if progress.max_comparisons else ""
    cost = f"${progress.cost_usd:.4f}" if progress.cost_usd is not None else "n/a"
    return (
        f"{progress.n_comparisons:,}{budget} comparisons · leader {progress.leader} · "
        f"{_remaining_text(progress)} · cost {cost} · {_duration(progress.elapsed_seconds)}"
    )


def _remaining_text(progress: Progress) -> str:
    low, high = progress.remaining_low, progress.remaining_high
    if progress.estimated_remaining is None or low is None:
        return f"closest rival {progress.binding_rival}: too early to tell how many more"
    if high is None:
        return f"at least ~{low:,} more comparisons ({progress.binding_rival} still close)"
    if high == 0:
        return "done"
    return f"~{progress.estimated_remaining:,} more comparisons (likely {low:,}–{high:,})"


def _duration(seconds: float) -> str:
    """``0.4 s``, ``41 s``, ``2 min 41 s``, ``1 h 5 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def _count(value: float) -> str:
    """``812``, ``18k``, ``1.2M``: the size of a count at a glance."""
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    return f"{value:,.0f}"


def _evaluation_line(progress: EvaluationProgress) -> str:
    cost = f"${progress.cost_usd:.4f}" if progress.cost_usd is not None else "n/a"
    return (
        f"evaluation {progress.done:,}/{progress.total:,} comparisons · winner vs baseline "
        f"{progress.wins:g} wins, {progress.ties:g} ties, {progress.losses:g} losses · "
        f"cost {cost} · {progress.elapsed_seconds:.1f} s"
    )


def _load_detail(step: LoadStep, seconds: float) -> str:
    """``45.2/98.4 MB, 3.1 MB/s`` for a download, ``120/272 tensors`` for a conversion."""
    if step.unit == "bytes":
        total = f"/{step.total / 1e6:.1f}" if step.total else ""
        rate = f", {step.done / seconds / 1e6:.1f} MB/s" if seconds > 0 else ""
        return f"{step.done / 1e6:.1f}{total} MB{rate}"
    if step.unit:
        return f"{step.done:,.0f}/{step.total or 0:,.0f} {step.unit}"
    return "done" if step.finished else "…"


class _Display:
    """Rich live lines on a terminal (a bar for each step of fetching or loading a model, then
    the run's progress line); a plain log line every few seconds otherwise."""

    def __init__(self) -> None:
        self.live: Live | None = None
        self._line: Text = Text("")
        self._loads: RichProgress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._started: dict[str, float] = {}
        self._printed: dict[str, float] = {}
        if error_console.is_terminal:
            self.live = Live(Text(""), console=error_console, refresh_per_second=4, transient=False)
            self.live.start()

    @property
    def interval(self) -> float:
        return 0.25 if self.live is not None else 5.0

    def __call__(self, line: str) -> None:
        if self.live is not None:
            self._line = Text(line)
            self._refresh()
        else:
            print(f"[llmpo] {line}", file=sys.stderr, flush=True)

    def load_step(self, step: LoadStep) -> None:
        """Show how a model's download, conversion or loading goes (from any thread)."""
        now = time.monotonic()
        started = self._started.setdefault(step.what, now)
        detail = _load_detail(step, now - started)
        if self.live is None:
            if step.finished or now - self._printed.get(step.what, -math.inf) >= self.interval:
                self._printed[step.what] = now
                print(f"[llmpo] {step.what}: {detail}", file=sys.stderr, flush=True)
            return
        if self._loads is None:
            self._loads = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=error_console,
                auto_refresh=False,
            )
        total = step.total if step.total else (1 if step.finished else None)
        if step.what not in self._tasks:
            self._tasks[step.what] = self._loads.add_task(step.what, total=total, detail=detail)
        done = total if step.finished else step.done
        self._loads.update(self._tasks[step.what], completed=done, total=total, detail=detail)
        self._refresh()

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self._line if self._loads is None else Group(self._loads, self._line))

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


ConcurrencyOpt = Annotated[
    int,
    typer.Option(
        "--concurrency", min=1, max=1024, help="Live LLM experiments: comparisons in flight."
    ),
]


def _execute(store: Store, experiment_id: int, as_json: bool, concurrency: int = 8) -> None:
    from llmpo.config import stored_config
    from llmpo.runtime.run import Runner

    record = store.experiment(experiment_id)
    try:
        config = stored_config(record.config)
    except ValueError:
        config = None  # the Runner names the problem
    if config is not None and config.judged_by_people:
        raise _fail(
            f"experiment {experiment_id} is judged by people. Fix: serve it to them with "
            f"llmpo serve {store.path}"
        )
    note = store.migration_note()
    if note is not None:
        error_console.print(escape(note), soft_wrap=True, highlight=False)
    display = _Display()
    runner = Runner(
        store,
        experiment_id,
        lambda progress: display(_progress_line(progress)),
        progress_interval=display.interval,
        concurrency=concurrency,
    )
    if runner.legacy_ties:
        error_console.print(
            f"Experiment {experiment_id} was stored before tie-aware statistics: it resumes "
            "counting a tie as half a win, the statistic it was created with (docs/ties.md).",
            soft_wrap=True,
            highlight=False,
        )
    if runner.dropped_policies:
        error_console.print(
            f"Dense subset: {len(runner.environment.policies)} policies kept; dropped "
            f"{len(runner.dropped_policies)} without enough records of every pair: "
            + escape(", ".join(runner.dropped_policies)),
            soft_wrap=True,
            highlight=False,
        )
    try:
        with watching_loads(display.load_step):
            outcome = runner.run()
    except KeyboardInterrupt:
        display.close()
        store.set_status(experiment_id, "interrupted", event="interrupted", detail={"forced": True})
        raise _fail(
            f"stopped at once; resume with: llmpo resume {store.path} {experiment_id}", 130
        ) from None
    finally:
        display.close()
    code = _print_outcome(outcome, store, as_json)
    if code:
        raise typer.Exit(code)


#: Exit code of a run that finished without certifying a policy (it reached a budget).
EXIT_UNCERTIFIED = 3

EXIT_CODES_HELP = (
    "Exit codes: 0 certified; 3 finished without a certificate (a budget ran out: the output "
    "prints the command that continues it); 130 interrupted (resume it); 1 a backend failed "
    "(every finished comparison is stored; resume it); 2 bad input."
)

COLUMNS_HELP = (
    ("comparisons", "how often the best and this rival were compared"),
    ("W/T/L", "the best's wins, ties and losses against this rival"),
    ("best wins", "{best_wins}"),
    (
        "evidence",
        "how strongly the comparisons say the best beats this rival (a log-likelihood "
        "ratio, 0 = no evidence)",
    ),
    (
        "needed",
        "the evidence that rules the rival out at {confidence} confidence (it grows slowly "
        "with the comparisons)",
    ),
    ("verdict", "ruled out, or still undecided: the comparisons it likely needs (80% range)"),
)


def _confidence(delta: float) -> str:
    """1 − δ as a percentage: ``90%``, ``99.9%``."""
    return f"{round(100 * (1 - delta), 6):g}%"


def _usage_text(usage: Usage, environment: str) -> str:
    parts = []
    if usage.llm_calls is not None:
        parts.append(f"{usage.llm_calls:,} LLM calls")
    elif environment == "replay":
        parts.append("recorded judgments, no LLM calls")
    else:
        parts.append("simulated, no LLM calls")
    tokens = usage.to_dict()["tokens"]
    if tokens is not None:
        parts.append(f"{_count(tokens)} tokens")
    if usage.cost_usd is not None:
        parts.append(f"${usage.cost_usd:.2f}")
    elif environment == "llm":
        parts.append("cost not reported")
    parts.append(_duration(usage.wall_seconds))
    return ", ".join(parts)


def _rival_rows(result: Any) -> list[dict[str, Any]]:
    """Per rival of the best: its name, numbers, and for an undecided one the comparisons it
    likely still needs (low, high; high None when unbounded; both None when unknown)."""
    rows: list[dict[str, Any]] = []
    structured = result.counts is None or result.utilities is not None
    for rival, comparisons, win_prob, statistic, threshold in zip(
        result.rivals,
        result.rival_comparisons,
        result.rival_win_prob,
        result.statistics,
        result.thresholds,
        strict=True,
    ):
        row: dict[str, Any] = {
            "policy": result.policies[rival],
            "comparisons": comparisons,
            **result.rival_record(len(rows)),
            "win_prob_hat": win_prob,
            "evidence": statistic,
            "needed": threshold,
            "ruled_out": statistic > threshold,
            "more_low": None,
            "more_high": None,
        }
        if not row["ruled_out"]:
            count = result.n_comparisons if structured else comparisons
            needs = rival_needs([statistic], [threshold], [count])
            if needs is not None:
                _, low, high = needs[0]
                row["more_low"] = math.ceil(low)
                row["more_high"] = None if math.isinf(high) else math.ceil(high)
        rows.append(row)
    return rows


def _still_needed(row: dict[str, Any]) -> str:
    if row["ruled_out"]:
        return "ruled out"
    if row["more_low"] is None:
        return "no evidence yet"
    if row["more_high"] is None:
        return f"≥ {row['more_low']:,} more"
    return f"~{row['more_low']:,}–{row['more_high']:,} more"


def _round_up(value: float) -> int:
    """Up to two significant digits: 437 → 440, 1234 → 1300."""
    step = 10 ** max(len(str(math.ceil(value))) - 2, 0)
    return math.ceil(value / step) * step


def _continue_command(
    outcome: RunOutcome, store_path: Path, config: dict[str, Any], usage: Usage, rows: list
) -> str:
    """The command that continues a run that stopped at its budget, with a larger one."""
    base = f"llmpo resume {store_path} {outcome.experiment_id}"
    limit = config.get("max_cost")
    if limit is not None and usage.cost_usd is not None and usage.cost_usd >= limit:
        return f"{base} --max-cost {2 * limit:g}"
    n = outcome.result.n_comparisons
    highs = [row["more_high"] for row in rows if not row["ruled_out"]]
    if highs and all(high is not None for high in highs):
        structured = outcome.result.counts is None or outcome.result.utilities is not None
        more = max(highs) if structured else sum(highs)
        return f"{base} --max-comparisons {_round_up(n + max(more, 1))}"
    return f"{base} --max-comparisons {_round_up(2 * n)}"


#: Margin of the near-tie hint: a rival the best beats with probability within ½ ± NEAR_TIE
#: after MIN_NEAR_TIE comparisons, and the ε suggested for it.
NEAR_TIE = 0.05
MIN_NEAR_TIE = 100


def _near_ties(result: Any, undecided: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Undecided rivals that look tied with the best, when the run asked for exact optimality.

    Two equally good policies are never certified apart with ε = 0 (that would take forever), so
    a run that ends without a certificate on such a rival should say so and name the fix."""
    if result.epsilon or result.n_comparisons < MIN_NEAR_TIE:
        return []
    return [
        row
        for row in undecided
        if row["win_prob_hat"] is not None and abs(row["win_prob_hat"] - 0.5) <= NEAR_TIE
    ]


def _outcome_facts(
    outcome: RunOutcome, store: Store
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What ``run`` and ``resume`` print, as JSON-ready facts (the result, what it cost, the
    plain sentence, the rivals still undecided, the command that continues it, the exit code),
    and the rows of every rival."""
    from llmpo.runtime.setup import usage_of

    record = store.experiment(outcome.experiment_id)
    usage = usage_of(store, record)
    result = outcome.result
    environment = record.config.get("environment", {}).get("type", "")
    rows = _rival_rows(result)
    confidence = _confidence(result.delta)
    within = f" (up to a margin ε = {result.epsilon:g})" if result.epsilon else ""
    spent = f"{result.n_comparisons:,} comparisons ({_usage_text(usage, environment)})"
    grid = (outcome.calls or {}).get("grid_generation_calls")
    if grid and result.certified:
        # What users would otherwise pay: every policy answering every task once, no certificate.
        spent += f"; every policy answering every task once would take {grid:,} generation calls"
    command = None
    undecided = [row for row in rows if not row["ruled_out"]]
    near = _near_ties(result, undecided) if not result.certified else []
    if outcome.status == "interrupted":
        summary = (
            f"Interrupted after {spent}; every comparison is stored. Resume with: "
            f"llmpo resume {store.path} {outcome.experiment_id}"
        )
        code = 130
    elif result.certified:
        summary = (
            f"{result.best_name} is the best of {len(result.policies)} policies{within}, with "
            f"{confidence} confidence, after {spent}."
        )
        code = 0
    else:
        command = _continue_command(outcome, store.path, record.config, usage, rows)
        summary = (
            f"No policy certified yet: {STATUS_TEXT.get(outcome.status, outcome.status)} after "
            f"{spent}. So far "
            f"{result.best_name} leads {len(result.policies)} policies, but "
            f"{len(undecided)} {'rival is' if len(undecided) == 1 else 'rivals are'} still "
            f"undecided at {confidence} confidence."
        )
        if near:
            names = ", ".join(row["policy"] for row in near)
            shares = ", ".join(f"{row['win_prob_hat']:.0%}" for row in near)
            summary += (
                f" {result.best_name} and {names} look nearly tied (best wins {shares}, ties "
                "counted half), and exact ties are never certified: if any of them would do, "
                f"`epsilon: {NEAR_TIE:g}` in the configuration certifies a policy that no rival "
                f"beats more than {0.5 + NEAR_TIE:.0%} of the time (docs/configuration.md)."
            )
        code = EXIT_UNCERTIFIED
    if outcome.judge_warning and outcome.status != "interrupted":
        # The comparisons say nothing about the policies: name no winner, certified or not.
        summary = f"No winner: {outcome.judge_warning}."
    facts = {
        **outcome.to_dict(str(store.path)),
        "near_ties": [row["policy"] for row in near],
        **usage.to_dict(),
        "summary": summary,
        "undecided": undecided,
        "continue_command": command,
        "exit_code": code,
    }
    return facts, rows


def _print_outcome(outcome: RunOutcome, store: Store, as_json: bool) -> int:
    """Print a run's outcome for people (or as JSON); the exit code."""
    from llmpo.report import LARGE_TABLE_ROWS

    facts, rows = _outcome_facts(outcome, store)
    if as_json:
        print(json.dumps(facts))
        return int(facts["exit_code"])
    console = Console(soft_wrap=True, highlight=False)
    console.print(escape(facts["summary"]))
    if outcome.status == "interrupted":
        return 130
    result = outcome.result
    if result.counts is None and len(rows) > LARGE_TABLE_ROWS:  # large structured space
        rows = sorted(rows, key=lambda row: row["evidence"] - row["needed"])[:LARGE_TABLE_ROWS]
    title = "rival" if result.certified else f"rival of {result.best_name}"
    table = Table(
        title, "comparisons", "W/T/L", "best wins", "evidence", "needed", "verdict",
        box=None,
    )
    for row in rows:
        outcomes = (
            "/".join(f"{row[key]:,.4g}" for key in ("wins", "ties", "losses"))
            if "wins" in row
            else "–"
        )
        table.add_row(
            escape(row["policy"]),
            f"{row['comparisons']:,}",
            outcomes,
            f"{row['win_prob_hat']:.0%}",
            f"{row['evidence']:.2f}",
            f"{row['needed']:.2f}",
            _still_needed(row),
        )
    console.print()
    console.print(table)
    if len(rows) < len(result.rivals):
        console.print(f"  (the {len(rows)} of {len(result.rivals):,} rivals closest to undecided)")
    confidence = _confidence(result.delta)
    best_wins = (
        "the share of the decided comparisons (ties left out) the best won"
        if result.ties == "decisive"
        else "the share of those comparisons the best won (ties count ½)"
    )
    for name, meaning in COLUMNS_HELP:
        text = meaning.format(confidence=confidence, best_wins=best_wins)
        console.print(f"  {name:<14} {text}", style="dim")
    console.print()
    if facts["continue_command"] is not None:
        console.print(
            "Continue it with a larger budget (stored comparisons are kept, not run again):\n  "
            + escape(facts["continue_command"])
        )
    replayed = (
        f"; {outcome.replayed:,} comparisons replayed from the store, "
        f"{outcome.new_comparisons:,} new"
        if outcome.replayed
        else ""
    )
    console.print(
        f"Details: llmpo report {escape(str(store.path))} {outcome.experiment_id} "
        f"(experiment {outcome.experiment_id}{replayed})"
    )
    return int(facts["exit_code"])


MaxComparisonsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-comparisons",
        min=1,
        help="Budget: stop after this many comparisons. With --resume (or llmpo resume): a "
        "larger budget continues a run that reached its own.",
    ),
]
MaxCostOpt = Annotated[
    float | None,
    typer.Option(
        "--max-cost",
        help="Budget in dollars (live LLM runs). With --resume (or llmpo resume): a larger one "
        "continues a run that reached its own.",
    ),
]


def _difference_text(differences: list[tuple[str, Any, Any]]) -> str:
    shown = "; ".join(f"{key}: {old!r} stored vs {new!r} now" for key, old, new in differences[:8])
    return shown + (f"; and {len(differences) - 8} more" if len(differences) > 8 else "")


def _resumable(config: Path, resolved: ExperimentConfig, store: Store) -> int:
    """The experiment ``run --resume`` continues, its budgets raised to the configuration's."""
    from llmpo.runtime.setup import BUDGET_FIELDS, closest_experiment, find_experiment

    record = find_experiment(resolved, store, ignore=BUDGET_FIELDS)
    if record is None:
        closest = closest_experiment(resolved, store)
        detail = (
            ""
            if closest is None
            else f"; the closest, experiment {closest[0].id}, differs in "
            f"{_difference_text(closest[1])}"
        )
        raise _fail(
            f"{resolved.store} holds no experiment started from {config} with these settings"
            f"{detail}. Fix: resume with the stored settings, or run without --resume to start "
            "a new experiment"
        )
    _raise_budget(store, record, resolved.max_comparisons, resolved.max_cost)
    return record.id


def _raise_budget(
    store: Store, record: ExperimentRecord, max_comparisons: int | None, max_cost: float | None
) -> None:
    from llmpo.runtime.setup import BUDGET_FIELDS, continue_with_budget

    if continue_with_budget(store, record, max_comparisons, max_cost):
        old = {key: record.config.get(key) for key in BUDGET_FIELDS}
        new = {"max_comparisons": max_comparisons, "max_cost": max_cost}
        changes = ", ".join(
            f"{key} {old[key] or 'none'} → {new[key] or 'none'}"
            for key in BUDGET_FIELDS
            if old[key] != new[key]
        )
        error_console.print(
            f"Experiment {record.id}: {changes}; continuing from its "
            f"{store.comparison_count(record.id):,} stored comparisons.",
            soft_wrap=True,
            highlight=False,
        )


def _identical(config: Path, resolved: ExperimentConfig, store: Store) -> int | None:
    """A stored experiment identical to the one ``run`` would start: its id to show it when it
    finished; a refusal naming both ways on when it did not; None when there is none."""
    from llmpo.runtime.setup import BUDGET_FIELDS, find_experiment

    record = find_experiment(resolved, store)
    if record is None:
        earlier = find_experiment(resolved, store, ignore=BUDGET_FIELDS)
        if earlier is not None and earlier.status not in ("certified", "running"):
            budgets = " ".join(
                f"--{key.replace('_', '-')} {getattr(resolved, key)}"
                for key in BUDGET_FIELDS
                if getattr(resolved, key) is not None
            )
            error_console.print(
                f"Note: experiment {earlier.id} has these settings but another budget, and "
                f"stopped ({earlier.status}); starting a new experiment. To continue that one "
                f"instead: llmpo run {config} --resume {budgets}".rstrip(),
                soft_wrap=True,
                highlight=False,
            )
        return None
    comparisons = store.comparison_count(record.id)
    live = resolved.environment.type == "llm"
    another = (
        "--new starts another (answers already in the store's cache are reused, not paid again)"
        if live
        else "--new starts another (with the same seed it draws the same comparisons)"
    )
    if record.status in ("running", "interrupted"):
        raise _fail(
            f"an identical experiment, {record.id} in {resolved.store}, stopped after "
            f"{comparisons:,} comparisons ({record.status}). Fix: continue it with llmpo run "
            f"{config} --resume, or {another}"
        )
    error_console.print(
        f"An identical experiment, {record.id} in {resolved.store}, already finished "
        f"({record.status} after {comparisons:,} comparisons): showing it. {another[0].upper()}"
        f"{another[1:]}.",
        soft_wrap=True,
        highlight=False,
    )
    return record.id


@app.command(epilog=EXIT_CODES_HELP)
def run(
    config: Annotated[Path, typer.Argument(help="Experiment configuration (YAML).")],
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the stored experiment of this config (interrupted, or stopped at a "
            "budget when a larger one is given).",
        ),
    ] = False,
    new: Annotated[
        bool,
        typer.Option(
            "--new", help="Start a new experiment even when an identical one is in the store."
        ),
    ] = False,
    as_json: JsonOpt = False,
    delta: Annotated[float | None, typer.Option(help="Override δ.")] = None,
    epsilon: Annotated[float | None, typer.Option(help="Override ε.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the seed.")] = None,
    max_comparisons: MaxComparisonsOpt = None,
    max_cost: MaxCostOpt = None,
    batch_size: Annotated[int | None, typer.Option(help="Override the batch size.")] = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            help=f"Override the sampling rule: {', '.join(STRATEGIES.builtin_names())}, or an "
            "installed plug-in's (docs/plugins.md)."
        ),
    ] = None,
    store: Annotated[Path | None, typer.Option(help="Override the store path.")] = None,
    concurrency: ConcurrencyOpt = 8,
    dense_subset: Annotated[
        bool | None,
        typer.Option(
            "--dense-subset/--no-dense-subset",
            help="Replay: drop policies until every pair has records.",
        ),
    ] = None,
) -> None:
    """Run an experiment from a YAML configuration (command-line flags override the file).

    An experiment identical to one already finished in the store is shown, not run again
    (--new starts another); --resume continues a stored one, with a larger budget if given.
    """
    if resume and new:
        raise _fail("--resume and --new contradict each other. Fix: give one of them")
    from llmpo.config import load_config
    from llmpo.runtime.setup import check_config, start_experiment

    overrides: dict[str, Any] = {
        "delta": delta,
        "epsilon": epsilon,
        "seed": seed,
        "max_comparisons": max_comparisons,
        "max_cost": max_cost,
        "batch_size": batch_size,
        "strategy": strategy,
        "store": None if store is None else str(store.resolve()),
        "environment.dense_subset": dense_subset,
    }
    try:
        resolved = load_config(config, overrides)
        if resolved.judged_by_people:
            raise _fail(
                f"{config}: judge: human means people judge. Fix: serve it to them with "
                f"llmpo serve {config}"
            )
        environment = None if resume else check_config(resolved)  # before touching the store
        with Store(resolved.store, writer=True) as opened:
            if resume:
                experiment_id = _resumable(config, resolved, opened)
            else:
                shown = None if new else _identical(config, resolved, opened)
                experiment_id = (
                    shown if shown is not None else start_experiment(resolved, opened, environment)
                )
            _execute(opened, experiment_id, as_json, concurrency)
    except ConfigError as error:
        # Named after the file it came from; reported where every error is (llmpo.cli).
        message = str(error)
        if message.startswith(str(config)):
            raise
        raise ConfigError(f"{config}: {message}") from None


@app.command("resume", epilog=EXIT_CODES_HELP)
def resume_command(
    store: StoreArg,
    experiment_id: IdArg = None,
    as_json: JsonOpt = False,
    concurrency: ConcurrencyOpt = 8,
    max_comparisons: MaxComparisonsOpt = None,
    max_cost: MaxCostOpt = None,
    experiment_option: DeprecatedIdOpt = None,
) -> None:
    """Continue an interrupted experiment, or one that reached its budget, given a larger one.

    The store's latest experiment by default.
    """
    experiment_id = experiment_id_of("resume", experiment_id, experiment_option)
    if not store.is_file():
        raise _fail(f"{store}: no such store. Fix: check the path")
    with Store(store, writer=True) as opened:
        record = opened.experiment(experiment_id)
        if max_cost is not None and max_cost <= 0:
            raise _fail(f"--max-cost {max_cost:g}: a budget must be above 0")
        if max_comparisons is not None or max_cost is not None:
            _raise_budget(
                opened,
                record,
                max_comparisons
                if max_comparisons is not None
                else record.config.get("max_comparisons"),
                max_cost if max_cost is not None else record.config.get("max_cost"),
            )
        _execute(opened, record.id, as_json, concurrency)


@app.command()
def experiments(store: StoreArg, as_json: JsonOpt = False) -> None:
    """List the experiments of a store: id, name, status, comparisons, best policy."""
    with Store(store, readonly=True) as opened:
        rows = [
            {
                "id": record.id,
                "name": record.name,
                "status": record.status,
                "comparisons": opened.comparison_count(record.id),
                "best": (record.result or {}).get("best"),
                "certified": (record.result or {}).get("certified", False),
                "created_at": record.created_at,
            }
            for record in opened.experiments()
        ]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("id", "name", "status", "comparisons", "best", "created (UTC)")
    for row in rows:
        table.add_row(
            str(row["id"]),
            escape(row["name"] or ""),
            row["status"],
            f"{row['comparisons']:,}",
            escape(row["best"] or "—"),
            row["created_at"][:19].replace("T", " "),
        )
    Console().print(table)


@app.command()
def report(
    store: StoreArg,
    experiment_id: IdArg = None,
    format: Annotated[ReportFormat, typer.Option("--format", help="Output format.")] = (
        ReportFormat.html
    ),
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Output file (default: STORE-ID.html beside the store for html; else stdout).",
        ),
    ] = None,
    experiment_option: DeprecatedIdOpt = None,
) -> None:
    """Report of a stored experiment: the answer, its certificate, plots and costs."""
    from llmpo.report import build_report, render_html, render_markdown

    experiment_id = experiment_id_of("report", experiment_id, experiment_option)
    with Store(store, readonly=True) as opened:
        data = build_report(opened, experiment_id)
    if format is ReportFormat.json:
        text = json.dumps(data, indent=2)
    elif format is ReportFormat.md:
        text = render_markdown(data)
    else:
        text = render_html(data)
        if output is None:
            output = store.with_name(f"{store.stem}-{data['experiment']['id']}.html")
    if output is None:
        print(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as error:
        raise _fail(f"{output}: cannot write the report ({error.strerror})") from None
    error_console.print(f"Report written to {escape(str(output))}", soft_wrap=True)


@app.command()
def export(
    store: StoreArg,
    experiment_id: Annotated[
        int | None, typer.Argument(help="Only this experiment (default: all).")
    ] = None,
    format: Annotated[ExportFormat, typer.Option("--format", help="Output format.")] = (
        ExportFormat.csv
    ),
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output file (default: stdout for csv)."),
    ] = None,
    evaluations: Annotated[
        bool,
        typer.Option(
            "--evaluations",
            help="The comparisons of the held-out evaluations (llmpo evaluate) instead of the "
            "runs', with an evaluation_id column.",
        ),
    ] = False,
    answers: Annotated[
        bool,
        typer.Option(
            "--answers",
            help="Add the two answers' texts (answer_a, answer_b) of live runs, from the store.",
        ),
    ] = False,
    mlflow: Annotated[
        bool,
        typer.Option(
            "--mlflow",
            help="Log one experiment (default: the latest) as an MLflow run instead: settings, "
            "certificate, costs, the HTML report and the comparisons.",
        ),
    ] = False,
    mlflow_uri: Annotated[
        str | None,
        typer.Option(
            "--mlflow-uri",
            help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else MLflow's).",
        ),
    ] = None,
    mlflow_experiment: Annotated[
        str | None,
        typer.Option(
            "--mlflow-experiment",
            help="MLflow experiment of the run (default: MLFLOW_EXPERIMENT_NAME, else llmpo).",
        ),
    ] = None,
    experiment_option: DeprecatedIdOpt = None,
) -> None:
    """Export stored comparisons, one row each, with policy names; times are ISO-8601 (UTC)."""
    from llmpo.export import ANSWER_COLUMNS, EXPORT_COLUMNS, export_row

    experiment_id = experiment_id_of("export", experiment_id, experiment_option)
    if mlflow:
        if output is not None or evaluations or format is not ExportFormat.csv:
            raise _fail("--mlflow logs to MLflow. Fix: drop --output, --format and --evaluations")
        _export_mlflow(store, experiment_id, mlflow_uri, mlflow_experiment, answers)
        return
    with Store(store, readonly=True) as opened:
        records = (
            [opened.experiment(experiment_id)]
            if experiment_id is not None
            else opened.experiments()
        )
        if evaluations:
            rows = [
                {
                    "evaluation_id": evaluation.id,
                    **export_row(record, comparison, opened if answers else None),
                }
                for record in records
                for evaluation in opened.evaluations(record.id)
                for comparison in opened.evaluation_comparisons(evaluation.id)
            ]
        else:
            rows = [
                export_row(record, comparison, opened if answers else None)
                for record in records
                for comparison in opened.iter_comparisons(record.id)
            ]
    if format is ExportFormat.parquet and output is None:
        raise _fail("parquet needs --output FILE")
    columns = [*EXPORT_COLUMNS, *(ANSWER_COLUMNS if answers else [])]
    try:
        _write_export(rows, ["evaluation_id", *columns] if evaluations else columns, format, output)
    except OSError as error:
        raise _fail(f"{output}: cannot write ({error.strerror})") from None
    if output is not None:
        error_console.print(
            f"{len(rows)} comparisons written to {escape(str(output))}", soft_wrap=True
        )


def _export_mlflow(
    store: Path, experiment_id: int | None, uri: str | None, name: str | None, answers: bool
) -> None:
    from llmpo.integrations.mlflow import log_experiment

    with Store(store, readonly=True) as opened:
        logged = log_experiment(
            opened, experiment_id, tracking_uri=uri, experiment_name=name, answers=answers
        )
    error_console.print(
        f"Logged as MLflow run {logged.run_id} of experiment {escape(logged.experiment_name)} "
        f"at {escape(logged.tracking_uri)}: {', '.join(logged.artifacts)}",
        soft_wrap=True,
        highlight=False,
    )


def _write_export(
    rows: list[dict[str, Any]], columns: list[str], format: ExportFormat, output: Path | None
) -> None:
    from llmpo.export import write_csv

    if format is ExportFormat.parquet:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise _fail("parquet export needs pyarrow: pip install 'llmpo[parquet]'") from None
        table = pa.Table.from_pylist(rows) if rows else pa.table({c: [] for c in columns})
        pq.write_table(table, output)
        return
    handle = output.open("w", newline="", encoding="utf-8") if output else sys.stdout
    try:
        write_csv(rows, columns, handle)
    finally:
        if output:
            handle.close()


@app.command()
def evaluate(
    store: StoreArg,
    experiment_id: IdArg = None,
    tasks: Annotated[
        Path | None,
        typer.Option(
            "--tasks",
            help="Held-out task file (replay: its ids); default the split recorded at the run.",
        ),
    ] = None,
    comparisons: Annotated[
        int, typer.Option("--comparisons", min=1, help="Comparisons of winner vs baseline.")
    ] = 200,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the unfinished evaluation.")
    ] = False,
    concurrency: ConcurrencyOpt = 8,
    as_json: JsonOpt = False,
    experiment_option: DeprecatedIdOpt = None,
) -> None:
    """Compare the certified policy with the baseline on held-out tasks, with a 95% interval."""
    experiment_id = experiment_id_of("evaluate", experiment_id, experiment_option)
    from llmpo.runtime.evaluation import Evaluation

    if not store.is_file():
        raise _fail(f"{store}: no such store. Fix: check the path")
    with Store(store, writer=True) as opened:
        display = _Display()
        try:
            evaluation = Evaluation(
                opened,
                experiment_id,
                comparisons,
                None if tasks is None else tasks.resolve(),
                concurrency,
                resume,
                lambda progress: display(_evaluation_line(progress)),
                display.interval,
            )
            with watching_loads(display.load_step):
                summary = evaluation.run()
        except KeyboardInterrupt:
            raise _fail(
                f"interrupted; every finished comparison is stored. Continue with: llmpo "
                f"evaluate {store} {opened.experiment(experiment_id).id} --resume",
                130,
            ) from None
        finally:
            display.close()
    if as_json:
        print(json.dumps(summary))
        return
    console = Console(soft_wrap=True, highlight=False)
    console.print(escape(summary["sentence"]))
    if summary.get("evaluation_id") is None:
        return
    low, high = summary["interval"]
    cost = f"${summary['cost_usd']:.4f}" if summary["cost_usd"] is not None else "not reported"
    console.print(
        f"Evaluation {summary['evaluation_id']} of experiment {summary['experiment_id']}: "
        f"{summary['wins']} wins, {summary['ties']} ties, {summary['losses']} losses; win rate "
        f"(ties ½) {summary['win_rate']:.3f}, 95% interval [{low:.3f}, {high:.3f}] "
        f"({summary['interval_method']}); cost {cost}."
    )
    if summary.get("caveat"):
        console.print(f"Note: {escape(summary['caveat'])}.")
    for name, accuracy in (summary["accuracy"] or {}).items():
        a_low, a_high = accuracy["interval"]
        console.print(
            f"Accuracy of {escape(name)}: {accuracy['accuracy']:.3f} "
            f"({accuracy['correct']}/{accuracy['n']}; 95% interval [{a_low:.3f}, {a_high:.3f}])"
        )
