"""Child processes that never outlive their parent.

A parent killed by SIGKILL (a timeout, the out-of-memory killer, ``kill -9``) runs no clean-up,
so its worker processes — the simulation pool, the HTTP workers of a live run — would keep
computing, or wait on sockets, with no one to report to. :func:`exit_with_parent`, called first
in a child, watches the parent from a daemon thread and ends the child within
:data:`WATCH_SECONDS` of the parent's death (the child is then re-parented, so ``getppid``
changes). Polling works on every POSIX system; Linux's parent-death signal would fire when the
*thread* that started the child ends, which a process pool does not guarantee.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["WATCH_SECONDS", "exit_with_parent"]

#: How often a child checks that its parent lives (so it ends at most this long after it).
WATCH_SECONDS = 0.25


def exit_with_parent(parent_pid: int | None = None) -> None:
    """End this process (exit status 1, no clean-up) as soon as its parent is gone.

    Parameters
    ----------
    parent_pid : int, optional
        The parent's pid as the parent knows it (pass ``os.getpid()`` from the parent: a child
        that starts after its parent died is then caught too); default the current parent.
    """
    expected = os.getppid() if parent_pid is None else parent_pid

    def watch() -> None:
        while True:
            if os.getppid() != expected:
                os._exit(1)  # no clean-up: there is no one left to hand results to
            time.sleep(WATCH_SECONDS)

    if os.getppid() != expected:
        os._exit(1)
    threading.Thread(target=watch, name="llmpo-parent-watch", daemon=True).start()
