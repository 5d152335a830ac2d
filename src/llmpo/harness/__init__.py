"""The research harness: simulation instances, Monte Carlo runs, benchmark suites, peers.

Nothing in the runtime (running, resuming, evaluating, serving an experiment) needs these modules
except the synthetic environments, which draw outcomes from an instance of
:mod:`llmpo.harness.instances`.
"""
