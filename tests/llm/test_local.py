"""The local SmolLM2 backend (needs ``llmpo[local]``; downloads the weights once): slow."""

import asyncio

import pytest

from llmpo.config import LocalBackendConfig
from llmpo.llm.backends import GenerationRequest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.slow


def request(seed: int, question: str = "What is the capital of France?") -> GenerationRequest:
    return GenerationRequest(
        (("system", "Answer in a few words."), ("user", question)),
        "smollm2",
        temperature=0.8,
        max_tokens=12,
        seed=seed,
    )


def test_local_backend_batches_and_reproduces_seeded_text():
    from llmpo.llm.local import LocalBackend

    async def answers(requests):
        backend = LocalBackend(LocalBackendConfig(type="local"))
        try:
            return await asyncio.gather(*(backend.complete(r, 600) for r in requests))
        finally:
            await backend.aclose()

    batch = asyncio.run(answers([request(1), request(2), request(1, "What is 2 + 3?")]))
    alone = asyncio.run(answers([request(1)]))
    assert all(g.text and g.output_tokens and g.input_tokens for g in batch)
    assert alone[0].text == batch[0].text  # the same seed, batched or alone
    assert batch[0].seconds == batch[1].seconds  # one batched call


def test_models_pull_on_the_real_weights_is_verified_and_cached():
    from typer.testing import CliRunner

    from llmpo.cli import app
    from llmpo.llm.local import LOCAL_MODELS, _sha256, cache_dir

    first = CliRunner().invoke(app, ["models", "pull", "smollm2"])
    assert first.exit_code == 0, first.output
    folder = cache_dir() / "smollm2"
    gguf = folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert _sha256(gguf) == LOCAL_MODELS["smollm2"].sha256
    assert (folder / "converted" / "model.safetensors").stat().st_size > 100_000_000
    again = CliRunner().invoke(app, ["models", "pull", "smollm2"])
    assert again.exit_code == 0 and "ready in 0." in again.output  # nothing left to do
