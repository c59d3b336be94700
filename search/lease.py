"""One driver per search: a lease on the search, held in the store while its driver lives.

Two ``search run --name X`` on one store at once (two terminals, a job submitted twice) would both run the search:
twice the trials, or one driver retraining the other's running trial as if it had been interrupted. The driver
therefore takes ``<store>/leases/<search id>.json`` (its host, pid, start and last renewal) before it writes
anything, renews it every ``RENEW_S`` while it runs, and removes it when it ends. A second driver finds the lease
and is refused at once, naming the holder. A lease whose holder is gone is taken over: on the same host, a pid
that no longer runs; anywhere, a renewal older than ``TTL_S`` (a SIGKILLed driver, a lost node).

On a local or NFS folder the lease is created with an exclusive create (``O_CREAT | O_EXCL``), and a stale one is
first moved aside under a unique name, which only one of two drivers taking it over can do. Object stores
(``s3://``) have no exclusive create through ``pyarrow.fs``: there the lease is written, read back after a
moment and kept only if it is still this driver's, which closes the window to that moment, not to zero.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import pyarrow.fs as pafs

from results.store import Store, StoreError

TTL_S = 60.0  # a lease not renewed for this long is its holder's no more
RENEW_S = 10.0
SETTLE_S = 1.0  # object stores: how long a written lease is left before it is read back


class LeaseError(StoreError):
    """Another driver runs this search."""


class Lease:
    """The lease of ``search_id`` in ``store``; ``with Lease(store, search_id):`` holds it for the block."""

    def __init__(self, store: Store, search_id: str) -> None:
        self.store = store
        self.search_id = search_id
        self.folder = f"{store.root}/leases"
        self.path = f"{self.folder}/{search_id}.json"
        self.token = uuid.uuid4().hex
        self.local = isinstance(store.fs, pafs.LocalFileSystem)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> "Lease":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _record(self, started: str | None = None) -> bytes:
        now = datetime.now(timezone.utc).isoformat()
        return json.dumps({"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                           "started_at": started or now, "renewed_at": now}).encode()  # fmt: skip

    def holder(self) -> dict[str, Any] | None:
        """The lease as written, or None when there is none (or it is unreadable: a write cut short)."""
        try:
            with self.store.fs.open_input_stream(self.path) as f:
                return json.loads(f.read())
        except (FileNotFoundError, ValueError):
            return None
        except OSError as exc:
            if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
                return None
            raise

    @staticmethod
    def stale(holder: dict[str, Any]) -> bool:
        """Whether ``holder``'s driver is gone: a pid that does not run on this host, or no renewal for ``TTL_S``."""
        if holder.get("host") == socket.gethostname():
            try:
                os.kill(int(holder["pid"]), 0)
            except ProcessLookupError:
                return True
            except (PermissionError, KeyError, ValueError, TypeError):
                pass
        try:
            renewed = datetime.fromisoformat(str(holder["renewed_at"]))
        except (KeyError, ValueError):
            return True
        return (datetime.now(timezone.utc) - renewed).total_seconds() > TTL_S

    def acquire(self) -> None:
        """Take the lease, or raise ``LeaseError`` naming the driver that holds it."""
        self.store.fs.create_dir(self.folder, recursive=True)
        for _ in range(3):  # a lease that vanishes or goes stale while we look: look again
            if self._create():
                self._renewer = threading.Thread(target=self._renew, name=f"lease-{self.search_id}", daemon=True)
                self._renewer.start()
                return
            holder = self.holder()
            if holder is None:
                continue
            if not self.stale(holder):
                raise LeaseError(
                    f"search {self.search_id} in {self.store.uri} is being run by another driver: pid {holder.get('pid')} on "
                    f"{holder.get('host')}, since {holder.get('started_at')} (lease renewed {holder.get('renewed_at')}); "
                    f"wait for it to end, or stop it, then resume"
                )
            self._take_over()
        raise LeaseError(f"search {self.search_id} in {self.store.uri}: could not take its lease {self.path}")

    def _create(self) -> bool:
        record = self._record()
        if self.local:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(record)
            return True
        if self.holder() is not None:
            return False
        with self.store.fs.open_output_stream(self.path) as f:
            f.write(record)
        time.sleep(SETTLE_S)
        return (self.holder() or {}).get("token") == self.token

    def _take_over(self) -> None:
        """Move a stale lease aside (only one taker's move succeeds on a folder), so that ``_create`` can run again."""
        aside = f"{self.folder}/.stale-{self.search_id}-{uuid.uuid4().hex[:8]}.json"
        try:
            self.store.fs.move(self.path, aside)
            self.store.fs.delete_file(aside)
        except (FileNotFoundError, OSError):
            pass  # another driver moved it first

    def _renew(self) -> None:
        started = (self.holder() or {}).get("started_at")
        while not self._stop.wait(RENEW_S):
            if (self.holder() or {}).get("token") != self.token:
                return  # taken over (this driver was thought gone): the other one owns it now
            with self.store.fs.open_output_stream(self.path) as f:
                f.write(self._record(started))

    def release(self) -> None:
        """Give the lease up, if it is still this driver's."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        if (self.holder() or {}).get("token") == self.token:
            try:
                self.store.fs.delete_file(self.path)
            except (FileNotFoundError, OSError):
                pass
