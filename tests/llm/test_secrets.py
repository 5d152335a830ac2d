"""No part of an API key survives an error path: stderr, store events, JSON reports."""

import asyncio

import pytest
from typer.testing import CliRunner

from llmpo.cli import app
from llmpo.config import BackendConfig
from llmpo.errors import clip, scrub
from llmpo.llm.backends import BackendError, GenerationRequest, OpenAIBackend
from llmpo.store import Store
from tests.llm.conftest import SECRET

runner = CliRunner()


def fragments(secret: str, size: int = 8) -> list[str]:
    """Every piece of ``secret`` of ``size`` characters (a leak of any of them is a leak)."""
    return [secret[start : start + size] for start in range(len(secret) - size + 1)]


def leaked(text: str) -> list[str]:
    return [piece for piece in fragments(SECRET) if piece in text]


def test_scrub_comes_before_the_cut_at_every_cut_position():
    for limit in range(5, 120):
        text = "x" * 50 + SECRET + " tail"
        assert leaked(clip(text, limit, SECRET)) == [], limit


def test_pieces_of_a_key_cut_elsewhere_are_masked():
    assert leaked(scrub("error: Bearer " + SECRET[:20], SECRET)) == []
    assert leaked(scrub(SECRET[-15:] + " was rejected", SECRET)) == []
    # A key of another provider, never registered, is masked by its shape.
    assert "sk-ant-" not in scrub("bad key sk-ant-api03-abcdefghijklmnopqrstu")


@pytest.mark.parametrize("padding", [240, 250, 260, 270, 280])
def test_a_key_echoed_across_the_cut_never_reaches_the_message(server, monkeypatch, padding):
    monkeypatch.setenv("MY_KEY", SECRET)
    server.echo_padding = padding
    server.faults.append("echo-key")
    backend = OpenAIBackend(
        BackendConfig(type="openai", model="m1", base_url=server.base_url, api_key_env="MY_KEY")
    )

    async def fail():
        try:
            await backend.complete(GenerationRequest((("user", "1 + 2?"),), "m1"), 1.0)
        finally:
            await backend.aclose()

    with pytest.raises(BackendError) as error:
        asyncio.run(fail())
    assert "HTTP 401" in str(error.value)
    assert leaked(str(error.value)) == []


def test_no_piece_of_an_echoed_key_in_stderr_store_or_json_report(project, server):
    text = (project / "live.yaml").read_text()
    (project / "live.yaml").write_text(
        text.replace("  type: llm\n", "  type: llm\n  max_retries: 1\n")
    )
    server.echo_padding = 260
    server.faults.extend(["echo-key"] * 100)
    result = runner.invoke(app, ["run", "live.yaml"])
    assert result.exit_code == 1 and "HTTP 401" in result.output
    assert leaked(result.output) == []
    for path in project.iterdir():
        if path.is_file():
            assert leaked(path.read_bytes().decode("utf-8", "replace")) == [], path
    with Store(project / "runs.db", readonly=True) as store:
        failures = [detail for _, kind, detail in store.events(1) if kind == "backend_failed"]
    assert failures and "HTTP 401" in failures[0]["error"]
    report = runner.invoke(app, ["report", "runs.db", "--format", "json"])
    assert report.exit_code == 0, report.output
    assert leaked(report.output) == []
