"""./.env: a key written there reaches the backend of a live run; a variable already set wins;
no value is ever printed, and a broken file is a warning, not a traceback."""

import json
import os

import pytest
from typer.testing import CliRunner

from llmpo.cli import app
from tests.llm.conftest import SECRET

runner = CliRunner()

FROM_DOTENV = "sk-dotenv-3c1e9b7a5d2f4e6a8b0c1d2e3f4a5b6c"


@pytest.fixture(autouse=True)
def environment_restored():
    """The variables a .env set in this process are gone after each test."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_a_key_in_dotenv_reaches_the_backend(project, server, monkeypatch):
    monkeypatch.delenv("MY_KEY")  # monkeypatch restores the test's own value afterwards
    (project / ".env").write_text(f"# the project's keys\nexport MY_KEY='{FROM_DOTENV}'\n")
    result = runner.invoke(app, ["run", "live.yaml", "--json", "--concurrency", "4"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["certified"] is True
    assert server.authorizations and all(
        auth == f"Bearer {FROM_DOTENV}" for auth in server.authorizations
    )
    assert FROM_DOTENV not in result.output


def test_a_variable_already_set_wins_over_dotenv(project, server):
    (project / ".env").write_text(f"MY_KEY={FROM_DOTENV}\n")
    result = runner.invoke(app, ["run", "live.yaml", "--json", "--concurrency", "4"])
    assert result.exit_code == 0, result.output
    assert server.authorizations and all(
        auth == f"Bearer {SECRET}" for auth in server.authorizations
    )


def test_without_the_key_anywhere_the_error_still_names_the_variable(project, monkeypatch):
    monkeypatch.delenv("MY_KEY")
    (project / ".env").write_text("OTHER_KEY=unused\n")
    result = runner.invoke(app, ["run", "live.yaml"])
    assert result.exit_code == 2 and "MY_KEY" in result.stderr and "Traceback" not in result.output


def test_a_dotenv_that_is_not_text_is_a_warning_without_values(project, monkeypatch):
    monkeypatch.delenv("MY_KEY")
    (project / ".env").write_bytes(b"MY_KEY=\xff\xfe" + FROM_DOTENV.encode() + b"\n")
    result = runner.invoke(app, ["run", "live.yaml"])
    assert ".env: not loaded (not UTF-8 text)" in result.stderr
    assert result.exit_code == 2 and "MY_KEY" in result.stderr  # the key is still missing
    assert FROM_DOTENV not in result.output and "Traceback" not in result.output
