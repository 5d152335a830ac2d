"""``llmpo view``: a local, read-only web viewer of stores (needs the ``llmpo[human]`` extra).

:mod:`llmpo.store.views` reads the store's tables (read-only connection, paging in SQL),
:mod:`llmpo.view.live` replays a running experiment's certificate, and :mod:`llmpo.view.app`
serves the pages.
"""
