"""A gunicorn app for the kill -9 tests: ``tests.apps.gunicorn_app``, whose worker kills
itself (SIGKILL) inside LMDB write transactions.

With ``RELIABILITY_KILL_P`` set, each write transaction of a worker picks a point and, with that
probability, the worker sends itself SIGKILL there:

- ``after-put``: the record is in the transaction, its eviction ledger not yet;
- ``before-commit``: the whole change is made, not committed;
- ``after-commit``: committed, the host lock still held, no answer sent yet.

Each kill is first appended to ``RELIABILITY_KILL_LOG`` (``pid point``), and no worker kills
itself once the log holds ``RELIABILITY_KILL_MAX`` lines, so the run ends with live workers.
"""

from __future__ import annotations

import os
import random
import signal
from typing import Any, Self

from tests.apps.gunicorn_app import app, cached

__all__ = ["app"]

_P = float(os.environ.get("RELIABILITY_KILL_P", "0"))
_LOG = os.environ.get("RELIABILITY_KILL_LOG", "")
_MAX = int(os.environ.get("RELIABILITY_KILL_MAX", "0"))
_POINTS = ("after-put", "before-commit", "after-commit")


def _die(point: str) -> None:
    with open(_LOG, "a+", encoding="ascii") as log:
        log.seek(0)
        if len(log.readlines()) >= _MAX:
            return
        log.write(f"{os.getpid()} {point}\n")
        log.flush()
        os.fsync(log.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


class _Txn:
    def __init__(self, txn: Any, records: Any) -> None:
        self._txn, self._records = txn, records
        self._point = random.choice(_POINTS) if random.random() < _P else None

    def __enter__(self) -> Self:
        self._txn.__enter__()
        return self

    def __exit__(self, *exc: object) -> Any:
        if exc[0] is None and self._point == "before-commit":
            _die(self._point)
        result = self._txn.__exit__(*exc)
        if exc[0] is None and self._point == "after-commit":
            _die(self._point)
        return result

    def put(self, key: bytes, value: bytes, **kw: Any) -> Any:
        result = self._txn.put(key, value, **kw)
        if kw.get("db") is self._records and self._point == "after-put":
            _die(self._point)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)


class _Env:
    def __init__(self, env: Any, records: Any) -> None:
        self._env, self._records = env, records

    def begin(self, **kw: Any) -> Any:
        txn = self._env.begin(**kw)
        return _Txn(txn, self._records) if kw.get("write") else txn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


if _P > 0:
    _store: Any = cached.storage
    _open = _store._open

    def _open_killing() -> Any:
        # The environment is opened lazily in each worker; wrap it once there.
        handle = _open()
        if not isinstance(handle.env, _Env):
            handle.env = _Env(handle.env, handle.records)
        return handle

    _store._open = _open_killing
