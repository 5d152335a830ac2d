"""The runtime: one run loop (:mod:`llmpo.runtime.driver`) for ``run``, ``resume``, ``evaluate``
and ``serve``, the sources of outcomes it drives (:mod:`llmpo.runtime.sources`,
:mod:`llmpo.runtime.live`) and the runner of stored experiments (:mod:`llmpo.runtime.run`).
See docs/architecture.md."""
