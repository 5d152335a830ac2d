"""The research harness: simulation instances, Monte Carlo runs, benchmark suites, peers.

Nothing in the runtime (running, resuming, evaluating, serving an experiment) needs these modules
except the synthetic environments, which draw outcomes from an instance of
:mod:`llmpo.harness.instances`.
"""

#: Tasks of the grid baseline of a simulation when none are given (here, light, for the
#: command line's --help).
DEFAULT_GRID_TASKS = 100
