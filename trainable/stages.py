"""Results of a pipeline's stages (e.g. TimeBalance's pretrained teachers), trained once and reused by every trial
whose stage depends on the same things.

A stage result lives under the store, at ``<store>/stage_results/<stage>/<key>/`` (beside the ledger's tables,
whose ``stages`` table records which trial used which result), where ``key`` hashes exactly what the
stage depends on (the config keys it reads, the labeled split's hash): a trial that sweeps something else (the
student's ω, another seed of the student only) finds it and loads it instead of training. Trials that need the
same result at the same time do not both train it: the first creates ``lock`` (an exclusive create, atomic on a
local or NFS filesystem), trains, moves its output into ``result/`` and writes ``done.json``; the others wait for
``done.json``. The owner touches its lock every few seconds; a lock nobody has touched for ``stale_s`` is an owner
that died (a killed trial, a lost node), and the next waiter takes over. An owner whose build raises removes its
lock, so a waiter takes over at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)

DONE = "done.json"
LOCK = "lock"
RESULT = "result"


class StageStoreError(ValueError):
    """A store where stage results cannot be shared safely."""


def stage_key(stage: str, depends: dict[str, Any]) -> str:
    """A short hash of the stage's name and everything it depends on (key order does not matter)."""
    text = json.dumps({"stage": stage, **depends}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StageResult:
    """Where a stage's result is, and whether this call trained it or found it."""

    stage: str
    key: str
    path: Path  # the ``result/`` folder: what the build wrote
    reused: bool
    info: dict[str, Any]  # done.json: who built it, when, in how long, from what


class StageStore:
    """``<store>/stage_results``: one folder per stage result. The store must be a local or NFS path (a lock is an
    exclusive file create, which object stores such as s3 do not offer)."""

    def __init__(self, store_uri: str | os.PathLike[str], stale_s: float = 120.0, heartbeat_s: float = 5.0, poll_s: float = 1.0) -> None:
        uri = str(store_uri)
        if "://" in uri and not uri.startswith("file://"):
            raise StageStoreError(f"stage results need a store on a shared filesystem (local or NFS), not {uri}")
        self.root = Path(uri.removeprefix("file://")).expanduser().resolve() / "stage_results"
        self.stale_s, self.heartbeat_s, self.poll_s = stale_s, heartbeat_s, poll_s

    def folder(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def get(self, stage: str, depends: dict[str, Any], build: Callable[[Path], None], owner: str = "") -> StageResult:
        """The stage's result: found, waited for, or built here by ``build(folder)``, which writes its files into
        ``folder`` (a private temporary folder, moved into place only when ``build`` returns)."""
        key = stage_key(stage, depends)
        folder = self.folder(stage, key)
        folder.mkdir(parents=True, exist_ok=True)
        waited_since = None
        while True:
            found = self._done(folder)
            if found is not None:
                if waited_since is not None:
                    log.info("stage %s %s: built by %s, reused after waiting %.0f s", stage, key, found.get("owner"), time.monotonic() - waited_since)
                return StageResult(stage, key, folder / RESULT, True, found)
            token = self._take(folder, owner) or self._break_stale(folder, owner)
            if token:
                return self._build(folder, token, stage, key, depends, build, owner)
            if waited_since is None:
                waited_since = time.monotonic()
                log.info("stage %s %s: %s is building it; waiting", stage, key, self._owner(folder))
            time.sleep(self.poll_s)

    def _done(self, folder: Path) -> dict[str, Any] | None:
        try:
            return json.loads((folder / DONE).read_text())
        except FileNotFoundError:
            return None

    def _take(self, folder: Path, owner: str) -> str | None:
        """Create the lock if nobody holds it; the token that proves this call holds it, or None."""
        try:
            fd = os.open(folder / LOCK, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        token = uuid.uuid4().hex
        with os.fdopen(fd, "w") as handle:
            json.dump({"owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "since": _now(), "token": token}, handle)
        return token

    def _break_stale(self, folder: Path, owner: str) -> str | None:
        """Take over a lock whose owner stopped touching it; the new token if this call now holds the lock."""
        lock = folder / LOCK
        try:
            idle = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return self._take(folder, owner)
        if idle < self.stale_s:
            return None
        # Rename first: of several waiters breaking the same stale lock, exactly one rename succeeds.
        broken = folder / f"{LOCK}.stale-{os.getpid()}-{time.monotonic_ns()}"
        try:
            lock.rename(broken)
        except FileNotFoundError:
            return None
        log.warning("stage %s: the lock of %s was untouched for %.0f s; building it here", folder, self._owner_of(broken), idle)
        broken.unlink(missing_ok=True)
        return self._take(folder, owner)

    def _owner(self, folder: Path) -> str:
        return self._owner_of(folder / LOCK)

    @staticmethod
    def _owner_of(lock: Path) -> str:
        try:
            held = json.loads(lock.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return "another trial"
        return f"{held.get('owner') or 'a trial'} (pid {held.get('pid')} on {held.get('host')})"

    def _holds(self, folder: Path, token: str) -> bool:
        try:
            return json.loads((folder / LOCK).read_text()).get("token") == token
        except (FileNotFoundError, json.JSONDecodeError):
            return False

    def _build(
        self, folder: Path, token: str, stage: str, key: str, depends: dict[str, Any], build: Callable[[Path], None], owner: str
    ) -> StageResult:
        work = folder / f"building-{token}"
        started = time.monotonic()
        try:
            with self._heartbeat(folder, token):
                work.mkdir()
                build(work)
                info = {"stage": stage, "key": key, "depends": depends, "owner": owner,
                        "seconds": round(time.monotonic() - started, 3), "written_at": _now()}  # fmt: skip
                if not self._holds(folder, token) or (folder / DONE).exists():
                    # This owner was taken for dead and another built it meanwhile: theirs stands.
                    log.warning("stage %s %s: another trial took over while this one built; using theirs", stage, key)
                    return self.get(stage, depends, build, owner)
                shutil.rmtree(folder / RESULT, ignore_errors=True)  # a half-moved result of an owner that died
                work.rename(folder / RESULT)
                tmp = folder / f".{DONE}.{token}.tmp"
                tmp.write_text(json.dumps(info, sort_keys=True, default=str))
                tmp.replace(folder / DONE)  # the moment the result exists for everyone
        finally:
            shutil.rmtree(work, ignore_errors=True)
            if self._holds(folder, token):
                (folder / LOCK).unlink(missing_ok=True)
        log.info("stage %s %s: built in %.1f s", stage, key, info["seconds"])
        return StageResult(stage, key, folder / RESULT, False, info)

    @contextmanager
    def _heartbeat(self, folder: Path, token: str) -> Iterator[None]:
        """Touch the lock every ``heartbeat_s`` while the build runs (and while it is still ours), so waiters
        know its owner is alive."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_s) and self._holds(folder, token):
                try:
                    os.utime(folder / LOCK)
                except FileNotFoundError:
                    return

        thread = threading.Thread(target=beat, name="stage-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()
