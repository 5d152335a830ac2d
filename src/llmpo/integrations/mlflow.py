"""A stored experiment as an MLflow run: its settings, certificate, costs, report and comparisons.

``llmpo export STORE --mlflow`` calls :func:`log_experiment`. MLflow (the ``mlflow`` extra,
``mlflow-skinny`` is enough) is imported only here, when a run is logged. Everything logged comes
from the same code as ``llmpo report`` and ``llmpo export``, so the run holds what those show.

What a run holds:

- params: the settings that decide the guarantee and the sampling (δ, ε, strategy, threshold,
  space, number of policies, seed, batch size, budgets, environment and judge type);
- metrics: comparisons, certified (1 or 0), what the run cost (generation and judge calls,
  tokens, dollars, wall time) where the store recorded it, the smallest margin of the certificate
  (statistic − threshold of the closest rival), the binding rival's statistic and threshold as a
  history over comparisons, and the latest held-out evaluation's win rate with its interval;
- tags: winner (only when certified), best (the leader), stop reason, status, llmpo version,
  the store and experiment id; the run's description is the report's one-sentence answer;
- artifacts: ``report.html`` (as ``llmpo report``), ``report.json``, ``comparisons.csv`` (as
  ``llmpo export``), ``certificate.csv`` (one row per rival) and ``config.yaml``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from llmpo import __version__
from llmpo.errors import LlmpoError
from llmpo.export import ANSWER_COLUMNS, EXPORT_COLUMNS, export_row, write_csv
from llmpo.report import build_report, render_html
from llmpo.store import Store

#: The MLflow experiment of the runs when neither an argument nor MLFLOW_EXPERIMENT_NAME names one.
DEFAULT_EXPERIMENT = "llmpo"

#: MLflow's own cap on the metrics of one ``log_batch`` call.
_METRICS_PER_BATCH = 1000

#: The settings logged as params, under these names, when the configuration sets them.
_PARAMS = (
    "delta",
    "epsilon",
    "strategy",
    "space",
    "seed",
    "batch_size",
    "max_comparisons",
    "max_cost",
    "assume_condorcet",
    "baseline",
)

#: The run's cost totals (``report["costs"]``) logged as metrics, under their report names.
_COST_METRICS = (
    "generation_calls",
    "judge_calls",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "wall_seconds",
    "comparison_seconds",
    "invalid_verdicts",
)


class MlflowExportError(LlmpoError, RuntimeError):
    """MLflow is missing or refused the run; the message says what to do."""


@dataclass(frozen=True)
class LoggedRun:
    """Where an experiment was logged.

    Attributes
    ----------
    run_id : str
        The MLflow run's id.
    experiment_name : str
        The MLflow experiment holding the run.
    tracking_uri : str
        The tracking URI, without any user, password or query it had.
    artifacts : tuple of str
        The artifact files logged.
    """

    run_id: str
    experiment_name: str
    tracking_uri: str
    artifacts: tuple[str, ...]


def safe_uri(uri: str) -> str:
    """A tracking URI fit to print: user, password, query and fragment removed.

    Parameters
    ----------
    uri : str
        A tracking URI (``http://user:token@host:5000``, ``file:///...``, ``databricks``, …).

    Returns
    -------
    str
        The URI without its credentials.
    """
    parts = urlsplit(uri)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _import_mlflow() -> Any:
    # MLflow's usage telemetry would contact mlflow.org from an export; off unless the user
    # decided otherwise in the environment.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        import mlflow
    except ImportError:
        raise MlflowExportError(
            "exporting to MLflow needs the mlflow extra. Fix: pip install 'llmpo[mlflow]'"
        ) from None
    return mlflow


def _params(report: dict[str, Any]) -> dict[str, str]:
    experiment = report["experiment"]
    config = experiment["config"]
    params = {key: config[key] for key in _PARAMS if config.get(key) is not None}
    params["threshold"] = experiment["threshold"]  # the rule used, also when left default
    params["policies"] = len(experiment["policies"])
    params["environment"] = config["environment"]["type"]
    judge = config["environment"].get("judge")
    if isinstance(judge, dict) and judge.get("type"):
        params["judge"] = judge["type"]
    return {key: str(value) for key, value in params.items()}


def _margin(rival: dict[str, Any]) -> float | None:
    statistic, threshold = rival.get("statistic"), rival.get("threshold")
    if statistic is None or threshold is None:  # unbounded, stored as null
        return None
    return float(statistic) - float(threshold)


def _metrics(report: dict[str, Any]) -> list[tuple[str, float, int]]:
    """(name, value, step) of every metric; steps other than 0 are comparisons so far."""
    answer, costs = report["answer"], report["costs"]
    metrics = [
        ("comparisons", float(answer["n_comparisons"]), 0),
        ("certified", 1.0 if report["summary"]["certified"] else 0.0, 0),
    ]
    metrics += [(key, float(costs[key]), 0) for key in _COST_METRICS if costs.get(key) is not None]
    margins = [m for m in map(_margin, answer.get("rivals") or []) if m is not None]
    if margins:
        metrics.append(("min_margin", min(margins), 0))
    for point in report["trace"]:
        metrics.append(("binding_statistic", float(point["statistic"]), point["comparisons"]))
        metrics.append(("binding_threshold", float(point["threshold"]), point["comparisons"]))
    if report["savings"] is not None:
        metrics.append(("uniform_estimate", float(report["savings"]["uniform_estimate"]), 0))
    evaluated = [g for g in report["gain"] if g.get("win_rate") is not None]
    if evaluated:
        latest = evaluated[-1]
        low, high = latest["interval"]
        metrics += [
            ("holdout_win_rate", float(latest["win_rate"]), 0),
            ("holdout_win_rate_low", float(low), 0),
            ("holdout_win_rate_high", float(high), 0),
            ("holdout_comparisons", float(latest["comparisons"]), 0),
        ]
    return [m for m in metrics if math.isfinite(m[1])]  # an unbounded statistic is no figure


def _tags(report: dict[str, Any], store: Store) -> dict[str, str]:
    answer, experiment, summary = report["answer"], report["experiment"], report["summary"]
    tags = {
        "llmpo.best": answer["best"],
        "llmpo.stop_reason": answer.get("stop_reason") or experiment["status"],
        "llmpo.status": experiment["status"],
        "llmpo.version": __version__,
        "llmpo.code_version": experiment["code_version"],
        "llmpo.store": str(Path(store.path).resolve()),
        "llmpo.experiment_id": str(experiment["id"]),
        "mlflow.note.content": summary["sentence"],
    }
    if summary["winner"] is not None:
        tags["llmpo.winner"] = summary["winner"]
    if experiment["name"]:
        tags["llmpo.experiment_name"] = experiment["name"]
    return tags


def _write_certificate(report: dict[str, Any], path: Path) -> None:
    """One row per rival of the answer: the figures of the report's certificate table."""
    columns = ["rival", "comparisons", "win_prob_hat", "statistic", "threshold", "margin"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for rival in report["answer"].get("rivals") or []:
            writer.writerow(
                {
                    "rival": rival["policy"],
                    "comparisons": rival["comparisons"],
                    "win_prob_hat": rival.get("win_prob_hat"),
                    "statistic": rival["statistic"],
                    "threshold": rival["threshold"],
                    "margin": _margin(rival),
                }
            )


def _write_artifacts(
    store: Store, report: dict[str, Any], folder: Path, answers: bool
) -> tuple[str, ...]:
    # llmpo export's own rows and writer: comparisons.csv is what `llmpo export` writes.
    record = store.experiment(report["experiment"]["id"])
    (folder / "report.html").write_text(render_html(report), encoding="utf-8")
    (folder / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    rows = [
        export_row(record, comparison, store if answers else None)
        for comparison in store.iter_comparisons(record.id)
    ]
    columns = [*EXPORT_COLUMNS, *(ANSWER_COLUMNS if answers else [])]
    with (folder / "comparisons.csv").open("w", newline="", encoding="utf-8") as handle:
        write_csv(rows, columns, handle)
    _write_certificate(report, folder / "certificate.csv")
    (folder / "config.yaml").write_text(
        yaml.safe_dump(record.config, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    return tuple(sorted(path.name for path in folder.iterdir()))


def log_experiment(
    store: Store,
    experiment_id: int | None = None,
    *,
    tracking_uri: str | None = None,
    experiment_name: str | None = None,
    answers: bool = False,
) -> LoggedRun:
    """Log a stored experiment as one new MLflow run (see the module's docstring for what).

    Parameters
    ----------
    store : Store
        The store (read-only is enough).
    experiment_id : int, optional
        Default: the latest experiment of the store.
    tracking_uri : str, optional
        Default: MLflow's own choice (``MLFLOW_TRACKING_URI``, else its default store).
    experiment_name : str, optional
        The MLflow experiment, created if missing. Default: ``MLFLOW_EXPERIMENT_NAME``, else
        ``llmpo``.
    answers : bool
        Add the two answers' texts to ``comparisons.csv`` (as ``llmpo export --answers``).

    Returns
    -------
    LoggedRun
        The run's id, its experiment, the tracking URI (without credentials) and the artifacts.

    Raises
    ------
    StoreError
        The store or the experiment cannot be read.
    MlflowExportError
        MLflow is not installed, or the tracking store refused the run (the message is MLflow's,
        with the URI stripped of credentials). A run that fails after it was created is marked
        ``FAILED``.
    """
    mlflow = _import_mlflow()
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    report = build_report(store, experiment_id)
    name = experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    uri = tracking_uri or mlflow.get_tracking_uri()
    where = safe_uri(uri)
    run_id: str | None = None
    try:
        client = mlflow.MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(name)
        mlflow_experiment = found.experiment_id if found else client.create_experiment(name)
        record = report["experiment"]
        run = client.create_run(
            mlflow_experiment,
            run_name=record["name"] or f"llmpo experiment {record['id']}",
            tags=_tags(report, store),
        )
        run_id = run.info.run_id
        client.log_batch(
            run_id, params=[Param(k, v) for k, v in _params(report).items()], synchronous=True
        )
        stamp = int(time.time() * 1000)  # MLflow's clock: milliseconds
        metrics = [Metric(key, value, stamp, step) for key, value, step in _metrics(report)]
        for start in range(0, len(metrics), _METRICS_PER_BATCH):
            client.log_batch(
                run_id, metrics=metrics[start : start + _METRICS_PER_BATCH], synchronous=True
            )
        with tempfile.TemporaryDirectory(prefix="llmpo-mlflow-") as folder:
            artifacts = _write_artifacts(store, report, Path(folder), answers)
            client.log_artifacts(run_id, folder)
        client.set_terminated(run_id, "FINISHED")
    except (MlflowException, OSError) as error:
        message = str(getattr(error, "message", None) or error).replace(uri, where)
        if run_id is not None:
            try:
                client.set_tag(run_id, "llmpo.export_error", message[:4000])
                client.set_terminated(run_id, "FAILED")
            except (MlflowException, OSError):  # the store is gone: nothing more to record
                pass
        raise MlflowExportError(f"MLflow at {where}: {message}") from None
    return LoggedRun(run_id, name, where, artifacts)
