"""Test suites shipped with llmpo, for implementations of its interfaces (needs pytest)."""
