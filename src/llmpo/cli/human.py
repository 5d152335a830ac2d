"""Commands for people as judges: ``serve`` (the judging web app) and ``judges add|list``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from llmpo.cli import LightGroup, app
from llmpo.cli.experiments import (
    DeprecatedIdOpt,
    IdArg,
    _fail,
    error_console,
    experiment_id_of,
)
from llmpo.errors import ConfigError
from llmpo.store import Store, StoreError

judges_app = typer.Typer(
    help="Manage the people who judge through 'llmpo serve'.", cls=LightGroup
)
app.add_typer(judges_app, name="judges")

StoreOpt = Annotated[
    Path, typer.Option("--store", help="The SQLite store whose experiments they judge.")
]


def _experiment_for(target: Path, experiment_id: int | None) -> tuple[Path, int]:
    """The store and experiment to serve: a store file, or a YAML configuration whose
    experiment is found in its store (or started there)."""
    from llmpo.config import load_config, stored_config
    from llmpo.runtime.setup import check_config, find_experiment, start_experiment

    if target.suffix.lower() in (".yaml", ".yml"):
        config = load_config(target)
        if not config.judged_by_people:
            raise ConfigError(
                f"{target}: field 'environment.judge': llmpo serve needs judge: {{type: human}}. "
                "Fix: set it, or use llmpo run for machine judges"
            )
        with Store(config.store, writer=True) as store:
            record = find_experiment(config, store)
            if record is None:
                return config.store, start_experiment(config, store, check_config(config))
            return config.store, record.id
    if not target.is_file():
        raise StoreError(f"{target}: no such store. Fix: check the path, or pass a configuration")
    with Store(target, readonly=True) as store:
        record = store.experiment(experiment_id)
    if not stored_config(record.config).judged_by_people:
        judge = record.config.get("environment", {}).get("judge") or {}
        raise StoreError(
            f"{target}: experiment {record.id} is not judged by people (judge type "
            f"{judge.get('type', 'none')}). Fix: serve an experiment with judge: {{type: human}}"
        )
    return target, record.id


@app.command()
def serve(
    target: Annotated[
        Path, typer.Argument(help="The store (or a YAML configuration with judge: human).")
    ],
    experiment_id: IdArg = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; another than 127.0.0.1 exposes it.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8765,
    concurrency: Annotated[
        int,
        typer.Option(min=1, max=256, help="Comparisons waiting for judges at once."),
    ] = 4,
    experiment_option: DeprecatedIdOpt = None,
) -> None:
    """Serve an experiment to human judges in the browser (Ctrl-C stops; serve again to resume)."""
    experiment_id = experiment_id_of("serve", experiment_id, experiment_option)
    try:
        import uvicorn

        from llmpo.human.app import create_app
    except ImportError:
        raise _fail("llmpo serve needs the human extra: pip install 'llmpo[human]'") from None
    store_path, experiment = _experiment_for(target, experiment_id)
    with Store(store_path, readonly=True) as store:
        judges = store.judge_credentials()
    if not judges:
        error_console.print(
            f"No judge can sign in yet. Add one: llmpo judges add NAME --store {store_path}",
            soft_wrap=True,
            highlight=False,
        )
    if host not in ("127.0.0.1", "localhost", "::1"):
        error_console.print(
            f"Listening on {escape(host)}: other machines can reach the judging pages. Use it "
            "only behind HTTPS (a reverse proxy), since tokens travel in cookies.",
            soft_wrap=True,
            highlight=False,
        )
    error_console.print(
        f"Serving experiment {experiment} of {escape(str(store_path))} to judges at "
        f"http://{host}:{port}/ (Ctrl-C stops; serve again to resume)",
        soft_wrap=True,
        highlight=False,
    )
    # Requests must name this server (DNS rebinding); on every interface the names are unknown.
    loopback = {"127.0.0.1", "localhost", "::1"}
    allowed = None if host in ("0.0.0.0", "::") else loopback | {host}
    application = create_app(store_path, experiment, concurrency, allowed_hosts=allowed)
    uvicorn.run(application, host=host, port=port, log_level="warning")


@judges_app.command("add")
def judges_add(
    name: Annotated[str, typer.Argument(help="The judge's name, recorded with each verdict.")],
    store: StoreOpt = Path("llmpo.db"),
    replace: Annotated[
        bool, typer.Option("--replace", help="Give an existing judge a new token.")
    ] = False,
) -> None:
    """Create a judge and print their sign-in token once (only its hash is stored)."""
    from llmpo.human.tokens import add_judge

    with Store(store) as opened:
        token = add_judge(opened, name, replace)
    error_console.print(
        f"Judge {escape(name.strip())} added to {escape(str(store))}. Their token (shown only "
        "now; it signs in at the llmpo serve page):",
        soft_wrap=True,
        highlight=False,
    )
    print(token)


@judges_app.command("list")
def judges_list(store: StoreOpt = Path("llmpo.db")) -> None:
    """List the judges of a store (names only; tokens are never shown again)."""
    with Store(store, readonly=True) as opened:
        names = [name for name, _, _ in opened.judge_credentials()]
    Console(soft_wrap=True, highlight=False).print("\n".join(escape(n) for n in names))
