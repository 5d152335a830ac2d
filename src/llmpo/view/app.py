"""``llmpo view``: a local, read-only web viewer of the experiments and evaluations of stores.

FastAPI with server-rendered, autoescaped Jinja2 pages (answers, tasks and policy names are
untrusted text), the judging app's stylesheet and small script (its ``#live`` block polls a
same-origin partial page and swaps it in, no reload), and its strict Content-Security-Policy:
no CDN, no inline script, nothing from another origin. Every store is opened read-only per
request (:func:`~llmpo.store.views.open_readonly`), so the viewer runs safely beside
``llmpo run``. With ``require_token`` (any address but the loopback) every page needs the token
of a judge of one of the stores (``llmpo judges add``), sent as ``Authorization: Bearer`` or
set as an HttpOnly, SameSite=Strict cookie by the sign-in form.

Import needs the ``llmpo[human]`` extra; use :func:`create_app` (or ``llmpo view``).
"""

from __future__ import annotations

import hmac
import json
import math
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles

from llmpo.config import ConfigError
from llmpo.human.app import HERE as HUMAN_HERE
from llmpo.human.app import add_security_headers
from llmpo.human.tokens import judge_for_token
from llmpo.llm.tasks import TaskError, load_tasks
from llmpo.store import Store, StoreError
from llmpo.store import views as queries
from llmpo.store.payloads import LiveRaw, replicates_of
from llmpo.store.views import EVALUATIONS, RUNS, Filters, Source, Tally
from llmpo.view.live import Tracker, plot

COOKIE = "llmpo_view"
SIGNIN_COOKIE = "llmpo_view_signin"
HERE = Path(__file__).parent
_PAGES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
#: The policy of the served HTML report (``llmpo report``): its inline style and images, no script.
REPORT_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
#: URL letter of each kind of owner of comparisons.
KINDS: dict[str, Source] = {"e": RUNS, "v": EVALUATIONS}


class _NotFoundError(Exception):
    """A page of something the stores do not hold (shown as a 404 page)."""


class Viewer:
    """The stores shown and what is remembered between requests: totals and live trackers,
    each brought up to date from the rows appended since (never recomputed from scratch)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.tallies: dict[tuple[int, str, int], Tally] = {}
        self.trackers: dict[tuple[int, int], Tracker] = {}
        self.tasks: dict[str, dict[str, Any] | str] = {}

    @contextmanager
    def open(self, index: int) -> Iterator[Store]:
        if not 0 <= index < len(self.paths):
            raise _NotFoundError(f"no store {index}")
        store = queries.open_readonly(self.paths[index])
        try:
            yield store
        finally:
            store.close()

    def tally(self, store: Store, index: int, kind: str, owner_id: int) -> Tally:
        tally = self.tallies.setdefault((index, kind, owner_id), Tally())
        return tally.update(store.connection, KINDS[kind], owner_id)

    def tracker(self, store: Store, index: int, experiment_id: int) -> Tracker:
        key = (index, experiment_id)
        tracker = self.trackers.get(key)
        if tracker is None:
            try:
                tracker = Tracker.of(store.experiment(experiment_id))
            except ValueError as error:  # a configuration this llmpo no longer accepts
                raise StoreError(
                    f"{self.paths[index]}: experiment {experiment_id}'s stored configuration "
                    f"does not build an experiment here ({error})"
                ) from None
            self.trackers[key] = tracker
        return tracker.update(store.connection)

    def task_text(self, record_config: dict[str, Any], task_id: str | None) -> str | None:
        """The task's prompt (or its fields), read from the experiment's task file if present."""
        path = (record_config.get("environment") or {}).get("tasks")
        if not path or task_id is None:
            return None
        tasks = self.tasks.get(path)
        if tasks is None:
            try:
                tasks = {t.id: t.fields for t in load_tasks(path)}
            except (OSError, TaskError) as error:
                tasks = f"(the task file is not readable here: {error})"
            self.tasks[path] = tasks
        if isinstance(tasks, str):
            return tasks
        fields = tasks.get(task_id)
        if fields is None:
            return None
        prompt = fields.get("prompt")
        return str(prompt) if prompt is not None else json.dumps(fields, indent=1, default=str)


def create_app(
    stores: Sequence[str | Path], require_token: bool = False, page_size: int = queries.PAGE_SIZE
) -> FastAPI:
    """The viewer of ``stores`` (read-only).

    Parameters
    ----------
    stores : sequence of str or Path
        The store files shown (each must exist; it is never written).
    require_token : bool
        Require a judge's token (of any of the stores) on every page: needed when the viewer
        listens on another address than the loopback.
    page_size : int
        Comparisons per page.

    Raises
    ------
    StoreError
        When a store cannot be opened for reading, or ``require_token`` is set and no store has a
        judge.
    """
    paths = [Path(p) for p in stores]
    for path in paths:
        queries.open_readonly(path).close()  # refuse a bad store now, with its message
    if require_token and not _has_judges(paths):
        raise StoreError(
            "no judge token can protect the viewer: the stores have no judges. Fix: "
            f"llmpo judges add NAME --store {paths[0]}, or listen on 127.0.0.1"
        )
    viewer = Viewer(paths)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.viewer = viewer
    app.mount("/static", StaticFiles(directory=HUMAN_HERE / "static"), name="static")
    app.mount("/view-static", StaticFiles(directory=HERE / "static"), name="view-static")

    def page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("signed_in", require_token)
        return HTMLResponse(_PAGES.get_template(name).render(**context), status_code)

    def token_ok(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        return _valid_token(paths, token or request.cookies.get(COOKIE))

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        path = request.url.path
        public = path.startswith(("/static/", "/view-static/")) or path == "/signin"
        if require_token and not public and not token_ok(request):
            if path.startswith("/api/"):
                return JSONResponse({"error": "send a judge's token"}, 401)
            return RedirectResponse("/signin", 303)
        try:
            response: Response = await call_next(request)
        except _NotFoundError as missing:
            response = page("message.html", 404, title="Not found", text=str(missing))
        except (StoreError, ConfigError) as error:
            response = page("message.html", 500, title="Cannot read", text=str(error))
        return response

    add_security_headers(app)  # outermost: every response, the guard's included

    @app.get("/signin", response_model=None)
    async def signin_form() -> Response:
        nonce = secrets.token_urlsafe(16)
        response = page("signin.html", title="Sign in", nonce=nonce, error=None)
        response.set_cookie(
            SIGNIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict", path="/signin"
        )
        return response

    @app.post("/signin", response_model=None)
    async def signin(request: Request) -> Response:
        form = await request.form()
        nonce = request.cookies.get(SIGNIN_COOKIE, "")
        token = str(form.get("token", "")).strip()
        fresh = bool(nonce) and hmac.compare_digest(str(form.get("nonce", "")), nonce)
        if not fresh or not _valid_token(paths, token):
            return page(
                "signin.html", 401, title="Sign in", nonce=nonce, error="This token is not valid."
            )
        response = RedirectResponse("/", 303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    @app.get("/", response_model=None)
    async def home(partial: int = 0) -> Response:
        listing: list[dict[str, Any]] = []
        for index, path in enumerate(paths):
            with viewer.open(index) as store:
                experiments = [
                    _summary(record, viewer.tally(store, index, "e", record.id))
                    for record in reversed(store.experiments())
                ]
                evaluations = [
                    {
                        "record": record,
                        "tally": viewer.tally(store, index, "v", record.id),
                        "result": record.result or {},
                    }
                    for record in reversed(store.evaluations())
                ]
            listing.append(
                {
                    "index": index,
                    "path": str(path),
                    "experiments": experiments,
                    "evaluations": evaluations,
                }
            )
        busy = any(
            e["status"] == "running" or not e["complete"]
            for st in listing
            for e in st["experiments"]
        ) or any(not v["tally"].complete for st in listing for v in st["evaluations"])
        return page(
            "index_live.html" if partial else "index.html",
            title="Experiments",
            stores=listing,
            every=1000 if busy else 10000,
        )

    def experiment_context(index: int, experiment_id: int) -> dict[str, Any]:
        with viewer.open(index) as store:
            record = _experiment(store, experiment_id)
            tally = viewer.tally(store, index, "e", experiment_id)
            tracker = viewer.tracker(store, index, experiment_id)
            record = store.experiment(experiment_id)  # the status may have changed meanwhile
        snapshot = tracker.snapshot()
        # What the remaining comparisons would cost at the run's average so far (rough, as the
        # estimate itself).
        seen = max(tally.last_seq, 1)
        for key in ("remaining", "remaining_low", "remaining_high"):
            count = snapshot[key]
            suffix = key.removeprefix("remaining")
            snapshot[f"remaining_calls{suffix}"] = (
                None if count is None else math.ceil(count * tally.calls / seen)
            )
            snapshot[f"remaining_cost{suffix}"] = (
                None if count is None or tally.cost is None else count * tally.cost / seen
            )
        return {
            "index": index,
            "store_path": str(paths[index]),
            "record": record,
            "summary": _summary(record, tally),
            "s": snapshot,
            "plot": plot(tracker.trace),
            "live_url": f"/s/{index}/e/{experiment_id}/live",
            "policies": list(enumerate(record.policies)),
        }

    @app.get("/s/{index}/e/{experiment_id}", response_model=None)
    async def experiment_page(index: int, experiment_id: int) -> Response:
        context = experiment_context(index, experiment_id)
        name = context["record"].name or f"experiment {experiment_id}"
        return page("experiment.html", title=name, **context)

    @app.get("/s/{index}/e/{experiment_id}/live", response_model=None)
    async def experiment_live(index: int, experiment_id: int) -> Response:
        return page("experiment_live.html", title="", **experiment_context(index, experiment_id))

    @app.get("/api/s/{index}/e/{experiment_id}", response_model=None)
    async def experiment_json(index: int, experiment_id: int) -> Response:
        context = experiment_context(index, experiment_id)
        summary = {k: v for k, v in context["summary"].items() if k != "record"}
        return JSONResponse({"summary": summary, "live": context["s"]})

    @app.get("/s/{index}/e/{experiment_id}/report", response_model=None)
    async def report_page(index: int, experiment_id: int) -> Response:
        from llmpo.report import build_report, render_html

        with viewer.open(index) as store:
            _experiment(store, experiment_id)
            report = render_html(build_report(store, experiment_id))
        # The report is one self-contained page (inline style, plots as data: images) and runs
        # no script: its own policy allows exactly that.
        return HTMLResponse(report, headers={"Content-Security-Policy": REPORT_POLICY})

    @app.get("/s/{index}/e/{experiment_id}/comparisons.csv", response_model=None)
    async def export_csv(index: int, experiment_id: int) -> Response:
        from llmpo.export import EXPORT_COLUMNS, csv_chunks, export_row

        with viewer.open(index) as store:
            _experiment(store, experiment_id)  # a clear 404 before the download starts

        def chunks() -> Iterator[str]:  # streamed: a run of 10⁶ comparisons is never held whole
            with viewer.open(index) as store:
                record = store.experiment(experiment_id)
                rows = (export_row(record, c) for c in store.iter_comparisons(experiment_id))
                yield from csv_chunks(rows, EXPORT_COLUMNS)

        name = f"experiment-{experiment_id}-comparisons.csv"
        return StreamingResponse(
            chunks(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @app.get("/s/{index}/{kind}/{owner_id}/comparisons", response_model=None)
    async def comparisons_page(
        request: Request,
        index: int,
        kind: str,
        owner_id: int,
        after: int | None = None,
        before: int | None = None,
    ) -> Response:
        source = _source(kind)
        params = request.query_params
        with viewer.open(index) as store:
            names, title = _owner(store, kind, owner_id)
            filters = _filters(params, names)
            found = queries.page(
                store.connection, source, owner_id, names, filters, after, before, page_size
            )
        base = f"/s/{index}/{kind}/{owner_id}/comparisons"
        query = filters.query()

        def link(**extra: Any) -> str:
            return base + "?" + urlencode({**query, **extra})

        return page(
            "comparisons.html",
            title=f"Comparisons · {title}",
            heading=title,
            index=index,
            kind=kind,
            owner_id=owner_id,
            names=names,
            policies=list(enumerate(names)),
            rows=found.rows,
            filters=filters,
            first=link(after=0),
            last=link(),
            previous=None if found.previous_before is None else link(before=found.previous_before),
            next=None if found.next_after is None else link(after=found.next_after),
            base=base,
            outcomes=list(queries.OUTCOMES),
        )

    @app.get("/s/{index}/{kind}/{owner_id}/c/{seq}", response_model=None)
    async def comparison_page(index: int, kind: str, owner_id: int, seq: int) -> Response:
        source = _source(kind)
        with viewer.open(index) as store:
            names, title = _owner(store, kind, owner_id)
            found = queries.comparison(store.connection, source, owner_id, seq)
            if found is None:
                raise _NotFoundError(f"{title} has no comparison #{seq}")
            config = _config_of(store, kind, owner_id)
            live = LiveRaw.from_json(found["raw"])
            replicates = replicates_of(found["raw"]) or (None, None)
            models = _models(config)
            answers = [
                queries.answer(
                    store.connection,
                    names[p],
                    found["task_id"],
                    replicates[side],
                    models.get(names[p]),
                )
                for side, p in enumerate((found["policy_a"], found["policy_b"]))
            ]
        outcome = found["outcome"]
        verdict = {
            1.0: f"{names[found['policy_a']]} won",
            0.5: "tie",
            0.0: f"{names[found['policy_b']]} won",
        }.get(outcome, f"{names[found['policy_a']]} preferred with probability {outcome:g}")
        seconds = (
            found["finished_at"] - found["started_at"]
            if found["finished_at"] is not None and found["started_at"] is not None
            else None
        )
        return page(
            "comparison.html",
            title=f"Comparison #{seq}",
            heading=title,
            back=f"/s/{index}/{kind}/{owner_id}/comparisons?after={max(seq - 1, 0)}",
            c=found,
            names=names,
            verdict=verdict,
            seconds=seconds,
            task=viewer.task_text(config, found["task_id"]),
            answers=answers,
            raw_judge=json.dumps(
                found["raw"] if live is None else live.judge, indent=2, ensure_ascii=False
            ),
            cached=None if live is None else list(live.cached),
        )

    return app


def _has_judges(paths: list[Path]) -> bool:
    for path in paths:
        with queries.open_readonly(path) as store:
            if store.judge_credentials():
                return True
    return False


def _valid_token(paths: list[Path], token: str | None) -> bool:
    """Whether ``token`` is the token of a judge of one of the stores."""
    for path in paths:
        with queries.open_readonly(path) as store:
            if judge_for_token(store, token) is not None:
                return True
    return False


def _source(kind: str) -> Source:
    if kind not in KINDS:
        raise _NotFoundError(f"no such page: {kind!r}")
    return KINDS[kind]


def _experiment(store: Store, experiment_id: int) -> Any:
    try:
        return store.experiment(experiment_id)
    except StoreError as error:
        raise _NotFoundError(str(error)) from None


def _owner(store: Store, kind: str, owner_id: int) -> tuple[list[str], str]:
    """The policy names indexing the owner's comparisons, and its title."""
    if kind == "e":
        record = _experiment(store, owner_id)
        return list(record.policies), record.name or f"experiment {owner_id}"
    try:
        evaluation = store.evaluation(owner_id)
    except StoreError as error:
        raise _NotFoundError(str(error)) from None
    names = [evaluation.winner, evaluation.baseline]
    return names, f"evaluation {owner_id}: {evaluation.winner} against {evaluation.baseline}"


def _config_of(store: Store, kind: str, owner_id: int) -> dict[str, Any]:
    experiment_id = owner_id if kind == "e" else store.evaluation(owner_id).experiment_id
    return _experiment(store, experiment_id).config


def _models(config: dict[str, Any]) -> dict[str, str]:
    """Policy name → the model of its backend (to pick its answers in the cache)."""
    found = {}
    for policy in config.get("policies") or []:
        if isinstance(policy, dict) and isinstance(policy.get("backend"), dict):
            found[str(policy.get("name"))] = str(policy["backend"].get("model"))
    return found


def _filters(params: Any, names: list[str]) -> Filters:
    def index(key: str) -> int | None:
        value = params.get(key, "")
        return int(value) if value.isdigit() and int(value) < len(names) else None

    outcome = params.get("outcome") or None
    a, b = index("a"), index("b")
    return Filters(
        a=a if a is not None else b,
        b=b if a is not None and b != a else None,
        outcome=outcome if outcome in queries.OUTCOMES else None,
        task=(params.get("task") or "").strip()[:200] or None,
        q=(params.get("q") or "").strip()[:200] or None,
    )


def _summary(record: Any, tally: Tally) -> dict[str, Any]:
    result = record.result or {}
    return {
        "record": record,
        "id": record.id,
        "name": record.name,
        "status": record.status,
        "winner": result.get("best"),
        "certified": bool(result.get("certified")),
        "comparisons": tally.total,
        "complete": tally.complete,
        "tallied": tally.last_seq,
        "calls": tally.calls,
        "generation_calls": tally.generations,
        "judge_calls": tally.judgements,
        "tokens": tally.tokens,
        "cost": tally.cost,
        "wall_seconds": tally.wall_seconds,
    }


def duration(seconds: float | None) -> str:
    """``1h 02m``, ``3m 05s``, ``4.2 s``, or ``—``."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def dollars(value: float | None) -> str:
    return "—" if value is None else f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


_PAGES.filters["duration"] = duration
_PAGES.filters["dollars"] = dollars
