"""llmpo: find the best way to run an LLM with as few judged comparisons as statistics allows.

The core is an ask/tell :class:`Experiment` over a policy space (:class:`Unstructured`, or
:class:`Structured` for policies described by features); it proposes pairs of policies to compare,
takes the judged outcomes, and stops as soon as it can name the optimal policy with probability at
least 1 − δ (LLM-PO, DESIGN §2–§5).
"""

from llmpo.experiment import Experiment, Result
from llmpo.spaces import Space, Structured, Unstructured

__all__ = ["Experiment", "Result", "Space", "Structured", "Unstructured"]
__version__ = "0.1.0"
