"""Environments answer comparisons: synthetic matrices, recorded judgments, live LLMs and judges."""

from llmpo.environments.base import Comparison, Environment
from llmpo.environments.synthetic import SyntheticEnvironment

__all__ = ["Comparison", "Environment", "SyntheticEnvironment"]
