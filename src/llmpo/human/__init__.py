"""People as judges: a browser app (``llmpo serve``) that hands out the comparisons an experiment
asks for, one judge at a time per comparison, and tells their verdicts through the store.

:mod:`llmpo.human.queue` and :mod:`llmpo.human.tokens` need only the standard library; the web
app, :mod:`llmpo.human.app`, needs the ``llmpo[human]`` extra (FastAPI, uvicorn).
"""
