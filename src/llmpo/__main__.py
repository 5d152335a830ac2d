"""``python -m llmpo`` runs the command line."""

from llmpo.cli import app

app()
