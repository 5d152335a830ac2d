"""llmpo: find the best way to run an LLM with as few judged comparisons as statistics allows.

The core is an ask/tell :class:`Experiment` over a policy space (:class:`Unstructured`, or
:class:`Structured` for policies described by features); it proposes pairs of policies to compare,
takes the judged outcomes, and stops as soon as it can name the optimal policy with probability at
least 1 − δ (LLM-PO, docs/statistics.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmpo.experiment import Experiment, Result
    from llmpo.spaces import Space, Structured, Unstructured

__all__ = ["Experiment", "Result", "Space", "Structured", "Unstructured"]
__version__ = "0.1.0"

# Imported on first use: a subpackage (the CLI's fast paths, the HTTP worker process) should not
# pay for scipy and the statistics core it does not need.
_HOMES = {
    "Experiment": "llmpo.experiment",
    "Result": "llmpo.experiment",
    "Space": "llmpo.spaces",
    "Structured": "llmpo.spaces",
    "Unstructured": "llmpo.spaces",
}


def __getattr__(name: str) -> object:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'llmpo' has no attribute {name!r}")
