"""The judges' web app: sign in, judge pairs side by side, follow the experiment live.

Built with FastAPI and server-rendered Jinja2 pages (autoescaped: answers are untrusted text);
CSS and a little JavaScript (keyboard shortcuts, live refresh) are served from the package, no
CDN, and a strict Content-Security-Policy allows nothing else. Every page and action needs a
judge's token: the sign-in form puts it in an HttpOnly, SameSite=Strict cookie (scripts may send
``Authorization: Bearer TOKEN`` instead); every form carries an anti-forgery value derived from
the token. Only the sign-in page and the static files are public.

Import needs the ``llmpo[human]`` extra; use :func:`create_app` (or ``llmpo serve``).
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import math
import secrets
import time
from collections.abc import AsyncIterator, Collection, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from llmpo.human.queue import CHOICES, MAX_COMMENT, LeaseError, PendingComparison
from llmpo.human.runner import HumanRunner
from llmpo.human.tokens import csrf_token, judge_for_token
from llmpo.store import Store

COOKIE = "llmpo_judge"
SIGNIN_COOKIE = "llmpo_signin"
#: A judge signs in again after 12 hours (a working day), not after a month.
COOKIE_MAX_AGE = 12 * 3600
#: Failed sign-ins allowed per client address within SIGNIN_WINDOW_SECONDS; more get HTTP 429.
MAX_SIGNIN_FAILURES = 10
SIGNIN_WINDOW_SECONDS = 60.0
HERE = Path(__file__).parent
_PAGES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def add_security_headers(app: FastAPI, allowed_hosts: Iterable[str] | None = None) -> None:
    """Send :data:`SECURITY_HEADERS` (the strict CSP, no framing, no caching) with every response
    of ``app``; the judging app and ``llmpo view`` share them. With ``allowed_hosts``, a request
    whose Host header names another host is refused (400), which defeats DNS rebinding."""
    hosts = None if allowed_hosts is None else {host.lower() for host in allowed_hosts}

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        if hosts is not None:
            host = request.headers.get("host", "").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name.strip("[]") not in hosts:
                return JSONResponse({"error": "unexpected Host header"}, 400, SECURITY_HEADERS)
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


@dataclass
class _Server:
    store_path: Path
    experiment_id: int | None
    concurrency: int
    assign_wait_seconds: float
    settle_wait_seconds: float
    store: Store | None = None
    runner: HumanRunner | None = None
    task: asyncio.Task[Any] | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def live(self) -> HumanRunner:
        assert self.runner is not None, "the server is not started"
        return self.runner

    def failure(self) -> str | None:
        """The error that stopped the runner, if any."""
        if self.task is None or not self.task.done() or self.task.cancelled():
            return None
        error = self.task.exception()
        return None if error is None else str(error)

    def finished(self) -> bool:
        return self.live.experiment.done or (self.task is not None and self.task.done())


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def status_data(server: _Server) -> dict[str, Any]:
    """Everything the status page shows, JSON-ready."""
    runner = server.live
    experiment = runner.experiment
    result = experiment.result
    progress = runner.progress(time.monotonic() - server.started)
    waiting, held = runner.judge.counts()
    store = server.store
    assert store is not None
    record = store.experiment(runner.record.id)
    names = [name for name, _, _ in store.judge_credentials()]
    names += [n for n in runner.verdicts_by_judge if n not in names]
    rivals = [
        {
            "policy": result.policies[r],
            "comparisons": comparisons,
            "win_rate": win_rate,
            "statistic": _finite(s),
            "threshold": _finite(b),
            "passed": bool(s > b),
            "progress": float(min(max(s / b, 0.0), 1.0)) if b > 0 and math.isfinite(s) else 0.0,
        }
        for r, s, b, comparisons, win_rate in zip(
            result.rivals,
            result.statistics,
            result.thresholds,
            result.rival_comparisons,  # also for a large structured space (no K×K counts)
            result.rival_win_prob,
            strict=True,
        )
    ]
    failure = server.failure()
    state = "stopped" if failure else (str(result.stop_reason) if experiment.done else "running")
    return {
        "experiment": {"id": record.id, "name": record.name, "status": record.status},
        "state": state,
        "error": failure,
        "leader": result.best_name,
        "certified": result.certified,
        "stop_reason": result.stop_reason,
        "delta": result.delta,
        "threshold": result.threshold,
        "comparisons": result.n_comparisons,
        "max_comparisons": experiment.max_comparisons,
        "estimated_remaining": None if experiment.done else progress.estimated_remaining,
        "waiting": waiting,
        "being_judged": sum(held.values()),
        "rivals": rivals,
        "judges": [
            {
                "name": name,
                "verdicts": runner.verdicts_by_judge.get(name, 0),
                "judging_now": held.get(name, 0),
            }
            for name in names
        ],
        "policies": list(result.policies),
    }


def create_app(
    store_path: str | Path,
    experiment_id: int | None = None,
    concurrency: int = 4,
    assign_wait_seconds: float = 5.0,
    settle_wait_seconds: float = 10.0,
    allowed_hosts: Collection[str] | None = None,
) -> FastAPI:
    """The judges' web app for one experiment of a store.

    On start-up it opens the store as its writer and resumes the experiment (every stored verdict
    is replayed); on shutdown the experiment is marked ``interrupted`` unless it is done.

    Parameters
    ----------
    store_path : str or Path
        The SQLite store holding the experiment and the judges.
    experiment_id : int, optional
        The experiment to serve (default: the latest); its judge must be ``human``.
    concurrency : int
        Comparisons waiting for people at once (their answers are generated ahead).
    assign_wait_seconds : float
        How long the judging page waits for a comparison before showing "waiting".
    settle_wait_seconds : float
        How long a verdict's form waits for the verdict to be committed and told.
    allowed_hosts : collection of str, optional
        Host names (without port) requests may be addressed to; others get HTTP 400, which
        stops DNS-rebinding pages from reaching a server on localhost. None: any host.

    Notes
    -----
    The sign-in cookie is ``Secure`` when the request came over HTTPS, lives
    :data:`COOKIE_MAX_AGE` seconds, and a client address gets HTTP 429 after
    :data:`MAX_SIGNIN_FAILURES` failed sign-ins within :data:`SIGNIN_WINDOW_SECONDS`.
    """
    server = _Server(
        Path(store_path), experiment_id, concurrency, assign_wait_seconds, settle_wait_seconds
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(server.store_path, writer=True)
        try:
            experiment = store.experiment(server.experiment_id).id
            server.runner = HumanRunner(store, experiment, server.concurrency)
        except BaseException:
            store.close()
            raise
        server.store = store
        server.started = time.monotonic()
        server.task = asyncio.create_task(server.runner.serve())
        try:
            yield
        finally:
            server.task.cancel()
            with suppress(BaseException):
                await server.task
            store.close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    add_security_headers(app, allowed_hosts)
    failures: dict[str, collections.deque[float]] = {}

    def page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(_PAGES.get_template(name).render(**context), status_code)

    def token_of(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return header[7:].strip()
        return request.cookies.get(COOKIE)

    def signed_in(request: Request) -> tuple[str, str] | None:
        """(judge name, token) of a valid token, else None."""
        token = token_of(request)
        assert server.store is not None
        name = judge_for_token(server.store, token)
        return None if name is None or token is None else (name, token)

    def signin_page(status_code: int = 200, error: str | None = None) -> Response:
        """The sign-in form, with a fresh anti-forgery nonce in a cookie and in the form."""
        nonce = secrets.token_urlsafe(16)
        response = page("signin.html", status_code, error=error, nonce=nonce, title="Sign in")
        response.set_cookie(
            SIGNIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict", path="/signin"
        )
        return response

    def refuse(request: Request, message: str | None = None) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "sign in with a judge's token"}, 401)
        return signin_page(401, message)

    def common(name: str, token: str) -> dict[str, Any]:
        record = server.live.record
        return {
            "judge": name,
            "csrf": csrf_token(token),
            "experiment_name": record.name or f"experiment {record.id}",
            "mine": server.live.verdicts_by_judge.get(name, 0),
        }

    @app.get("/", response_model=None)
    async def home(request: Request) -> Response:
        if signed_in(request) is None:
            return refuse(request)
        return RedirectResponse("/judge", 303)

    @app.get("/signin", response_model=None)
    async def signin_form(request: Request) -> Response:
        return signin_page()

    @app.post("/signin", response_model=None)
    async def signin(request: Request) -> Response:
        form = await request.form()
        nonce = request.cookies.get(SIGNIN_COOKIE, "")
        if not nonce or not hmac.compare_digest(str(form.get("nonce", "")), nonce):
            return signin_page(403, "This sign-in form is stale or forged: sign in again here.")
        client = request.client.host if request.client else "?"
        recent = failures.setdefault(client, collections.deque())
        now = time.monotonic()
        while recent and now - recent[0] > SIGNIN_WINDOW_SECONDS:
            recent.popleft()
        if len(recent) >= MAX_SIGNIN_FAILURES:
            wait = math.ceil(SIGNIN_WINDOW_SECONDS - (now - recent[0]))
            response = signin_page(429, f"Too many failed sign-ins: try again in {wait} s.")
            response.headers["Retry-After"] = str(wait)
            return response
        token = str(form.get("token", "")).strip()
        assert server.store is not None
        if judge_for_token(server.store, token) is None:
            recent.append(now)
            return signin_page(401, "This token is not valid here.")
        response = RedirectResponse("/judge", 303)
        response.delete_cookie(SIGNIN_COOKIE, path="/signin")
        response.set_cookie(
            COOKIE,
            token,
            max_age=COOKIE_MAX_AGE,
            httponly=True,
            samesite="strict",
            path="/",
            secure=request.url.scheme == "https",  # over TLS, never sent in clear
        )
        return response

    @app.post("/signout", response_model=None)
    async def signout(request: Request) -> Response:
        who = signed_in(request)
        if who is None:
            return refuse(request)
        form = await request.form()
        if not hmac.compare_digest(str(form.get("csrf", "")), csrf_token(who[1])):
            return page("message.html", 403, title="Refused", **common(*who), **_forged())
        response = RedirectResponse("/signin", 303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/judge", response_model=None)
    async def judge_page(request: Request) -> Response:
        who = signed_in(request)
        if who is None:
            return refuse(request)
        name = who[0]
        if server.finished():
            return page("finished.html", title="Finished", s=status_data(server), **common(*who))
        item = server.live.judge.assign(name)
        deadline = time.monotonic() + server.assign_wait_seconds
        while item is None and time.monotonic() < deadline and not server.finished():
            await asyncio.sleep(0.05)
            item = server.live.judge.assign(name)
        if item is None:
            if server.finished():
                return page(
                    "finished.html", title="Finished", s=status_data(server), **common(*who)
                )
            return page("waiting.html", title="Waiting", **common(*who))
        return page("judge.html", title="Judge", **_judging(item, server), **common(*who))

    @app.post("/judge", response_model=None)
    async def verdict(request: Request) -> Response:
        who = signed_in(request)
        if who is None:
            return refuse(request)
        name, token = who
        form = await request.form()
        if not hmac.compare_digest(str(form.get("csrf", "")), csrf_token(token)):
            return page("message.html", 403, title="Refused", **common(*who), **_forged())
        choice = str(form.get("choice", ""))
        comment = str(form.get("comment", ""))
        if choice not in CHOICES or len(comment) > MAX_COMMENT:
            return page(
                "message.html",
                422,
                title="Not recorded",
                heading="Verdict not recorded",
                text=f"Choose A, B or tie (comments up to {MAX_COMMENT} characters).",
                **common(*who),
            )
        try:
            item = server.live.judge.submit(
                name, str(form.get("item", "")), str(form.get("lease", "")), choice, comment
            )
        except LeaseError as error:
            if server.finished():  # the experiment ended meanwhile: show its result
                return RedirectResponse("/judge", 303)
            return page(
                "message.html",
                409,
                title="Not recorded",
                heading="Verdict not recorded",
                text=f"{str(error).capitalize()}.",
                **common(*who),
            )
        settled = server.live.settled_event(item.future.result())
        with suppress(TimeoutError):
            await asyncio.wait_for(
                _first(settled.wait(), _until(server.finished)), server.settle_wait_seconds
            )
        return RedirectResponse("/judge", 303)

    @app.get("/status", response_model=None)
    async def status_page(request: Request, partial: int = 0) -> Response:
        who = signed_in(request)
        if who is None:
            return refuse(request)
        template = "status_live.html" if partial else "status.html"
        return page(template, title="Status", s=status_data(server), **common(*who))

    @app.get("/api/status", response_model=None)
    async def status_json(request: Request) -> Response:
        if signed_in(request) is None:
            return refuse(request)
        return JSONResponse(status_data(server))

    return app


def _forged() -> dict[str, str]:
    return {
        "heading": "Form refused",
        "text": "This form did not come from your judging page (it may be forged or stale). "
        "Nothing was recorded.",
    }


def _judging(item: PendingComparison, server: _Server) -> dict[str, Any]:
    task = item.task
    prompt = task.fields.get("prompt")
    if prompt is None:
        prompt = "\n".join(f"{k}: {v}" for k, v in task.fields.items() if k != "reference")
    return {
        "item": item,
        "prompt": str(prompt),
        "reference": task.reference if server.live.judge.show_reference else None,
        "lease_minutes": max(1, round(server.live.judge.lease_seconds / 60)),
        "waiting": server.live.judge.counts()[0],
    }


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.05)


async def _first(*awaitables: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
