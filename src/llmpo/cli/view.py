"""``llmpo view``: the read-only web viewer of stores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from llmpo.cli import app
from llmpo.cli.experiments import _fail, error_console

#: Addresses only this machine reaches: no token needed there.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
def view(
    stores: Annotated[
        list[Path] | None, typer.Argument(help="Store files to show (default: llmpo.db).")
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on; any other than 127.0.0.1 requires a judge's token."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8766,
) -> None:
    """Look at experiments in the browser, live: certificate, costs, comparisons (read-only)."""
    try:
        import uvicorn

        from llmpo.view.app import create_app
    except ImportError:
        raise _fail("llmpo view needs the human extra: pip install 'llmpo[human]'") from None
    paths = stores or [Path("llmpo.db")]
    exposed = host not in LOOPBACK
    application = create_app(paths, require_token=exposed)
    if exposed:
        error_console.print(
            f"Listening on {escape(host)}: other machines can reach the viewer; each visitor "
            "signs in with a judge's token. Use it only behind HTTPS (a reverse proxy).",
            soft_wrap=True,
            highlight=False,
        )
    shown = ", ".join(escape(str(p)) for p in paths)
    error_console.print(
        f"Viewing {shown} (read-only) at http://{host}:{port}/ (Ctrl-C stops)",
        soft_wrap=True,
        highlight=False,
    )
    uvicorn.run(application, host=host, port=port, log_level="warning")
