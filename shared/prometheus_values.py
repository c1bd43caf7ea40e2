"""prometheus_client's multiprocess metric values, without a system call on every update.

With PROMETHEUS_MULTIPROC_DIR set (several workers sharing a port), each update of a counter, gauge or
histogram calls `os.getpid()` to notice a fork. glibc does not cache the pid, so that is a system call, and
on our 2-core machines it was 8.7% of a serving worker's event loop under 1-row load (py-spy --native): a
request updates several metrics. Here the pid is read once, and again in a forked child, which is all the
check needs.

`shared/__init__.py` imports this module, so it takes effect before any metric is made: a metric made with
prometheus_client's own class would map the same per-process file a second time.
"""

from __future__ import annotations

import os

from prometheus_client import values

_pid = os.getpid()


def _read_pid_again() -> None:
    global _pid
    _pid = os.getpid()


def current_pid() -> int:
    """This process's id, without a system call."""
    return _pid


os.register_at_fork(after_in_child=_read_pid_again)

if values.ValueClass is not values.MutexValue:  # multiprocess mode, chosen by prometheus_client at import
    values.ValueClass = values.MultiProcessValue(process_identifier=current_pid)  # type: ignore[no-untyped-call]
