"""Scale-out of Monte Carlo replications on Ray (``llmpo bench --backend ray``).

Install with ``pip install 'llmpo[ray]'``; Ray is imported only when this backend is chosen.
:class:`RayBackend` runs the chunks of replications that
:func:`llmpo.harness.simulate.run_replications` forms as Ray tasks. Replication r draws all its
randomness from child r of the master seed, so the table is the same as on the local process pool,
whatever the cluster.

With ``address`` the backend joins an existing cluster (``ray start --head`` elsewhere; llmpo must
be importable on its workers) and leaves it running; without, it starts a local Ray instance
with ``num_cpus`` CPUs and shuts it down on :meth:`RayBackend.close`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from llmpo.errors import LlmpoError
from llmpo.harness.simulate import Replication, SimulationSpec, run_chunk


class RayUnavailableError(LlmpoError, RuntimeError):
    """Ray is not installed (install the ``ray`` extra)."""


def import_ray() -> ModuleType:
    """Import Ray, or explain how to install it.

    Raises
    ------
    RayUnavailableError
        When Ray is not installed.
    """
    try:
        import ray
    except ImportError as error:
        raise RayUnavailableError(
            "backend ray needs the optional extra: pip install 'llmpo[ray]'"
        ) from error
    return ray


class RayBackend:
    """Runs chunks of replications as Ray tasks.

    Parameters
    ----------
    address : str, optional
        Address of a running cluster to join (e.g. ``"ray://head:10001"`` or ``"auto"``). None
        starts a local instance.
    num_cpus : int
        CPUs of the local instance (ignored when joining a cluster).

    Raises
    ------
    RayUnavailableError
        When Ray is not installed.
    """

    def __init__(self, address: str | None = None, num_cpus: int = 2) -> None:
        self._ray = import_ray()
        self._started = False
        if not self._ray.is_initialized():
            options: dict[str, Any] = {"log_to_driver": False, "logging_level": "ERROR"}
            if address is None:
                options.update(num_cpus=num_cpus, include_dashboard=False)
                self._started = True
            else:
                options["address"] = address
            self._ray.init(**options)
        self._task = self._ray.remote(run_chunk)

    def map_chunks(
        self, spec: SimulationSpec, chunks: list[list[np.random.SeedSequence]]
    ) -> list[list[Replication]]:
        """Run every chunk as a task; results in the order of ``chunks``."""
        shared = self._ray.put(spec)
        return list(self._ray.get([self._task.remote(shared, chunk) for chunk in chunks]))

    def close(self) -> None:
        """Shut down the local instance this backend started (a joined cluster keeps running)."""
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False

    def __enter__(self) -> RayBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
