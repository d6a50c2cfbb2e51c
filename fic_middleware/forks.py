"""The one answer to ``fork()``: gunicorn ``--preload``, uWSGI and granian fork workers after
the middleware was built in the parent.

An LMDB environment must not be used across fork, pooled sockets must not be shared with the
parent, ``fcntl`` locks belong to the process that took them, and counters belong to the
process that counted them. Every object holding one of those registers here; in the child,
right after ``fork()``, each one's ``after_fork()`` drops what it inherited, and it opens its
own again lazily on first use. One ``os.register_at_fork`` hook for the package, over a weak
set, so short-lived objects cost nothing and are not kept alive by it.

A server that forks from C without running Python's at-fork hooks (uWSGI without
``py-call-osafterfork``) is caught by :func:`check`, which compares the process id at the
points where a process starts using its own resources (its first request under the prefix,
every origin fetch): the hit path itself pays nothing.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class ForkAware(Protocol):
    def after_fork(self) -> None:
        """Runs in the child after fork(): forget what belongs to the parent."""


_live: weakref.WeakSet[ForkAware] = weakref.WeakSet()
_pid = os.getpid()


def register(obj: ForkAware) -> None:
    """Call ``obj.after_fork()`` in every child forked while ``obj`` lives."""
    _live.add(obj)


def check() -> None:
    """Run the after-fork resets if this process was forked without the hook running."""
    if os.getpid() != _pid:
        _after_fork_in_child()


def _after_fork_in_child() -> None:
    global _pid
    _pid = os.getpid()
    for obj in list(_live):
        obj.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
