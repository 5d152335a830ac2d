"""Commands for real experiments: ``run``, ``resume``, ``report`` and ``export``."""

from __future__ import annotations

import csv
import json
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from llmpo.cli import app
from llmpo.config import ConfigError, load_config
from llmpo.environments.replay import ReplayError
from llmpo.report import (
    LARGE_TABLE_ROWS,
    answer_texts,
    build_report,
    render_html,
    render_markdown,
)
from llmpo.runner import (
    Progress,
    RunFailedError,
    Runner,
    RunOutcome,
    check_config,
    find_experiment,
    start_experiment,
)
from llmpo.store import (
    COMPARISON_COLUMNS,
    STATUS_TEXT,
    ComparisonRecord,
    ExperimentRecord,
    Store,
    StoreError,
)

if TYPE_CHECKING:
    from llmpo.evaluation import EvaluationProgress

error_console = Console(stderr=True, soft_wrap=True)  # never break an error line
USER_ERRORS = (ConfigError, StoreError, ReplayError)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")]
StoreArg = Annotated[Path, typer.Argument(help="The SQLite store file.")]
IdArg = Annotated[
    int | None, typer.Argument(help="Experiment id (default: the latest in the store).")
]


#: The columns of ``llmpo export`` (csv, parquet and the MLflow artifact), before any answers.
EXPORT_COLUMNS = ["experiment_id", "name_a", "name_b", *COMPARISON_COLUMNS, "seconds"]


class ReportFormat(StrEnum):
    """Formats of ``llmpo report``."""

    html = "html"
    md = "md"
    json = "json"


class ExportFormat(StrEnum):
    """Formats of ``llmpo export``."""

    csv = "csv"
    parquet = "parquet"


def _fail(message: str, code: int = 2) -> typer.Exit:
    error_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _progress_line(progress: Progress) -> str:
    budget = f"/{progress.max_comparisons:,}" if progress.max_comparisons else ""
    remaining = (
        f"~{progress.estimated_remaining:,} to go"
        if progress.estimated_remaining is not None
        else "remaining unknown"
    )
    cost = f"${progress.cost_usd:.4f}" if progress.cost_usd is not None else "n/a"
    return (
        f"{progress.n_comparisons:,}{budget} comparisons · leader {progress.leader} · "
        f"smallest margin {progress.min_margin:+.2f} (vs {progress.binding_rival}) · "
        f"{remaining} · cost {cost} · {progress.elapsed_seconds:.1f} s"
    )


def _evaluation_line(progress: EvaluationProgress) -> str:
    cost = f"${progress.cost_usd:.4f}" if progress.cost_usd is not None else "n/a"
    return (
        f"evaluation {progress.done:,}/{progress.total:,} comparisons · winner vs baseline "
        f"{progress.wins} wins, {progress.ties} ties, {progress.losses} losses · cost {cost} · "
        f"{progress.elapsed_seconds:.1f} s"
    )


class _Display:
    """Rich live line on a terminal; a plain log line every few seconds otherwise."""

    def __init__(self) -> None:
        self.live: Live | None = None
        if error_console.is_terminal:
            self.live = Live(Text(""), console=error_console, refresh_per_second=4, transient=False)
            self.live.start()

    @property
    def interval(self) -> float:
        return 0.25 if self.live is not None else 5.0

    def __call__(self, line: str) -> None:
        if self.live is not None:
            self.live.update(Text(line))
        else:
            print(f"[llmpo] {line}", file=sys.stderr, flush=True)

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
    judge = store.experiment(experiment_id).config["environment"].get("judge") or {}
    if judge.get("type") == "human":
        raise _fail(
            f"experiment {experiment_id} is judged by people. Fix: serve it to them with "
            f"llmpo serve {store.path}"
        )
    display = _Display()
    runner: Runner
    if store.experiment(experiment_id).config["environment"]["type"] == "llm":
        from llmpo.llm.runner import AsyncRunner

        runner = AsyncRunner(
            store,
            experiment_id,
            concurrency,
            lambda progress: display(_progress_line(progress)),
            progress_interval=display.interval,
        )
    else:
        runner = Runner(
            store,
            experiment_id,
            on_progress=lambda progress: display(_progress_line(progress)),
            progress_interval=display.interval,
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
        outcome = runner.run()
    except RunFailedError as error:
        display.close()
        raise _fail(str(error), 1) from None
    except KeyboardInterrupt:
        display.close()
        store.set_status(experiment_id, "interrupted", event="interrupted", detail={"forced": True})
        raise _fail(
            f"stopped at once; resume with: llmpo resume {store.path} {experiment_id}", 130
        ) from None
    finally:
        display.close()
    _print_outcome(outcome, store.path, as_json)
    if outcome.status == "interrupted":
        raise typer.Exit(130)


def _print_outcome(outcome: RunOutcome, store_path: Path, as_json: bool) -> None:
    if as_json:
        print(json.dumps(outcome.to_dict(str(store_path))))
        return
    result = outcome.result
    console = Console(soft_wrap=True, highlight=False)
    if outcome.status == "interrupted":
        console.print(
            f"Interrupted after {result.n_comparisons:,} comparisons (all stored). "
            f"Resume with: llmpo resume {escape(str(store_path))} {outcome.experiment_id}"
        )
        return
    if outcome.judge_warning:
        error_console.print(f"Warning: {escape(outcome.judge_warning)}.", soft_wrap=True)
    verdict = "certified" if result.certified else f"NOT certified: {STATUS_TEXT[outcome.status]}"
    console.print(
        f"Experiment {outcome.experiment_id}: best policy [bold]{escape(result.best_name)}[/] — "
        f"{verdict}, {result.n_comparisons:,} comparisons "
        f"({outcome.replayed:,} replayed from the store, {outcome.new_comparisons:,} new)."
    )
    certificate = Table(
        "rival",
        "comparisons",
        "P̂(best ≻ rival)",
        "GLR statistic",
        "threshold",
        title=f"certificate: every statistic above its threshold ⇒ best with prob. ≥ "
        f"{1 - result.delta:g}",
    )
    rows = list(
        zip(
            result.rivals,
            result.rival_comparisons,
            result.rival_win_prob,
            result.statistics,
            result.thresholds,
            strict=True,
        )
    )
    if result.counts is None and len(rows) > LARGE_TABLE_ROWS:  # large structured space
        rows = sorted(rows, key=lambda row: row[3] - row[4])[:LARGE_TABLE_ROWS]
        certificate.caption = (
            f"the {LARGE_TABLE_ROWS} of {len(result.rivals):,} rivals closest to their threshold"
        )
    for rival, comparisons, win_prob, statistic, threshold in rows:
        certificate.add_row(
            escape(result.policies[rival]),
            f"{comparisons:,}",
            f"{win_prob:.3f}",
            f"{statistic:.2f}",
            f"{threshold:.2f}",
        )
    console.print(certificate)
    console.print(f"Report: llmpo report {escape(str(store_path))} {outcome.experiment_id}")


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Experiment configuration (YAML).")],
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the interrupted run of this config.")
    ] = False,
    as_json: JsonOpt = False,
    delta: Annotated[float | None, typer.Option(help="Override δ.")] = None,
    epsilon: Annotated[float | None, typer.Option(help="Override ε.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the seed.")] = None,
    max_comparisons: Annotated[int | None, typer.Option(help="Override the budget.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Override the batch size.")] = None,
    strategy: Annotated[str | None, typer.Option(help="Override the sampling rule.")] = None,
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
    """Run an experiment from a YAML configuration (command-line flags override the file)."""
    overrides: dict[str, Any] = {
        "delta": delta,
        "epsilon": epsilon,
        "seed": seed,
        "max_comparisons": max_comparisons,
        "batch_size": batch_size,
        "strategy": strategy,
        "store": None if store is None else str(store.resolve()),
        "environment.dense_subset": dense_subset,
    }
    try:
        resolved = load_config(config, overrides)
        if getattr(getattr(resolved.environment, "judge", None), "type", None) == "human":
            raise _fail(
                f"{config}: judge: human means people judge. Fix: serve it to them with "
                f"llmpo serve {config}"
            )
        environment = None if resume else check_config(resolved)  # before touching the store
        with Store(resolved.store, writer=True) as opened:
            if resume:
                record = find_experiment(resolved, opened)
                if record is None:
                    raise _fail(
                        f"{resolved.store} holds no experiment started from {config} with these "
                        "settings. Fix: run without --resume to start one"
                    )
                experiment_id = record.id
            else:
                experiment_id = start_experiment(resolved, opened, environment)
            _execute(opened, experiment_id, as_json, concurrency)
    except ConfigError as error:
        message = str(error)
        raise _fail(
            message if message.startswith(str(config)) else f"{config}: {message}"
        ) from None
    except USER_ERRORS as error:
        raise _fail(str(error)) from None


@app.command("resume")
def resume_command(
    store: StoreArg,
    experiment_id: IdArg = None,
    as_json: JsonOpt = False,
    concurrency: ConcurrencyOpt = 8,
) -> None:
    """Continue an interrupted experiment of a store (the latest by default)."""
    if not store.is_file():
        raise _fail(f"{store}: no such store. Fix: check the path")
    try:
        with Store(store, writer=True) as opened:
            _execute(opened, opened.experiment(experiment_id).id, as_json, concurrency)
    except USER_ERRORS as error:
        raise _fail(str(error)) from None


@app.command()
def experiments(store: StoreArg, as_json: JsonOpt = False) -> None:
    """List the experiments of a store: id, name, status, comparisons, best policy."""
    try:
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
    except USER_ERRORS as error:
        raise _fail(str(error)) from None
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
) -> None:
    """Report of a stored experiment: the answer, its certificate, plots and costs."""
    try:
        with Store(store, readonly=True) as opened:
            data = build_report(opened, experiment_id)
    except USER_ERRORS as error:
        raise _fail(str(error)) from None
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
    format: Annotated[ExportFormat, typer.Option("--format", help="Output format.")] = (
        ExportFormat.csv
    ),
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output file (default: stdout for csv)."),
    ] = None,
    experiment_id: Annotated[
        int | None, typer.Option("--experiment", help="Only this experiment (default: all).")
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
) -> None:
    """Export stored comparisons, one row each, with policy names; times are ISO-8601 (UTC)."""
    if mlflow:
        if output is not None or evaluations or format is not ExportFormat.csv:
            raise _fail("--mlflow logs to MLflow. Fix: drop --output, --format and --evaluations")
        _export_mlflow(store, experiment_id, mlflow_uri, mlflow_experiment, answers)
        return
    try:
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
                        **_export_row(record, comparison, opened if answers else None),
                    }
                    for record in records
                    for evaluation in opened.evaluations(record.id)
                    for comparison in opened.evaluation_comparisons(evaluation.id)
                ]
            else:
                rows = [
                    _export_row(record, comparison, opened if answers else None)
                    for record in records
                    for comparison in opened.iter_comparisons(record.id)
                ]
    except USER_ERRORS as error:
        raise _fail(str(error)) from None
    if format is ExportFormat.parquet and output is None:
        raise _fail("parquet needs --output FILE")
    columns = [*EXPORT_COLUMNS, *(["answer_a", "answer_b"] if answers else [])]
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
    from llmpo.integrations.mlflow import MlflowExportError, log_experiment

    try:
        with Store(store, readonly=True) as opened:
            logged = log_experiment(
                opened, experiment_id, tracking_uri=uri, experiment_name=name, answers=answers
            )
    except (*USER_ERRORS, MlflowExportError) as error:
        raise _fail(str(error)) from None
    error_console.print(
        f"Logged as MLflow run {logged.run_id} of experiment {escape(logged.experiment_name)} "
        f"at {escape(logged.tracking_uri)}: {', '.join(logged.artifacts)}",
        soft_wrap=True,
        highlight=False,
    )


def _write_export(
    rows: list[dict[str, Any]], columns: list[str], format: ExportFormat, output: Path | None
) -> None:
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
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    finally:
        if output:
            handle.close()


def _iso(seconds: float | None) -> str | None:
    """An epoch time as ISO-8601 UTC with milliseconds, like the store's own times."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _export_row(
    record: ExperimentRecord, comparison: ComparisonRecord, answers_from: Store | None = None
) -> dict[str, Any]:
    """One exported comparison; with ``answers_from``, the two answers' texts as well."""
    started, finished = comparison.started_at, comparison.finished_at
    row = {
        "experiment_id": record.id,
        "name_a": record.policies[comparison.policy_a],
        "name_b": record.policies[comparison.policy_b],
        "seq": comparison.seq,
        "policy_a": comparison.policy_a,
        "policy_b": comparison.policy_b,
        "outcome": comparison.outcome,
        "task_id": comparison.task_id,
        "presentation_order": comparison.order,
        "raw": None if comparison.raw is None else json.dumps(comparison.raw),
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "cost_usd": comparison.cost_usd,
        "input_tokens": comparison.input_tokens,
        "output_tokens": comparison.output_tokens,
        "seconds": None if started is None or finished is None else finished - started,
    }
    if answers_from is not None:
        texts = answer_texts(answers_from, tuple(record.policies), comparison)
        row["answer_a"], row["answer_b"] = texts
    return row


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
) -> None:
    """Compare the certified policy with the baseline on held-out tasks: the gain, with its
    95% interval."""
    from llmpo.evaluation import Evaluation

    if not store.is_file():
        raise _fail(f"{store}: no such store. Fix: check the path")
    try:
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
                summary = evaluation.run()
            except KeyboardInterrupt:
                raise _fail(
                    f"interrupted; every finished comparison is stored. Continue with: llmpo "
                    f"evaluate {store} {opened.experiment(experiment_id).id} --resume",
                    130,
                ) from None
            finally:
                display.close()
    except RunFailedError as error:
        raise _fail(str(error), 1) from None
    except (*USER_ERRORS, ValueError) as error:
        raise _fail(str(error)) from None
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
