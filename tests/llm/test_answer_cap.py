"""A huge answer is kept cut at a documented cap, with a marker (where every answer arrives)."""

import asyncio

import numpy as np

from llmpo.config import BackendConfig
from llmpo.limits import MAX_ANSWER_CHARS
from llmpo.llm.backends import GenerationRequest, OpenAIBackend, RetryPolicy, call_with_retries


def test_a_huge_answer_is_cut_at_the_cap_with_a_marker(server):
    server.responder = lambda body: "x" * (MAX_ANSWER_CHARS + 5000)

    async def once():
        backend = OpenAIBackend(BackendConfig(type="openai", model="m1", base_url=server.base_url))
        try:
            return await call_with_retries(
                backend,
                GenerationRequest((("user", "long?"),), "m1"),
                RetryPolicy(timeout_seconds=30.0),
                np.random.default_rng(0),
            )
        finally:
            await backend.aclose()

    text = asyncio.run(once()).text
    assert text.startswith("x" * MAX_ANSWER_CHARS)
    assert text[MAX_ANSWER_CHARS:].count("x") == 0 and "truncated by llmpo" in text
    assert f"{MAX_ANSWER_CHARS + 5000:,}" in text and len(text) < MAX_ANSWER_CHARS + 200
