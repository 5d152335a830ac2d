"""Sampling rules: LLM-PO's adaptive rules and the baselines, behind one interface."""

from llmpo.strategies.base import Oracle, Strategy, Uniform

__all__ = ["Oracle", "Strategy", "Uniform"]
