"""Results of a pipeline's stages (e.g. TimeBalance's pretrained teachers), trained once and reused by every trial
whose stage depends on the same things, on any node of a cluster.

A stage result lives on the store, at ``<store>/stage_results/<stage>/<key>/`` (beside the ledger's tables, whose
``stages`` table records which trial used which result), where ``key`` hashes exactly what the stage depends on
(the config keys it reads, the labeled subset's hash): a trial that sweeps something else (the student's ω, another
seed of the student only) finds it and loads it instead of training. The store is a folder (local or NFS) or an
``s3://`` URI; a result's folder holds:

- ``lock.<generation>``: who is building it. Trials that need the same result at the same time do not both train
  it: a build starts by *creating* the next lock, which exactly one of them can do. That create-if-absent is the
  one primitive sharing needs, and the store has it itself: ``os.link`` onto a taken name fails (atomic on a local
  or NFS filesystem), and S3 refuses a ``PutObject`` with ``If-None-Match: *`` on a key that exists (through
  boto3: pyarrow has no API for it). So any two processes that see the store coordinate, across nodes and
  searches, without a service that must outlive them (a named Ray actor would die with the driver or the head that
  holds it, and a process outside Ray has none);
- ``result-<token>/``: the files a build wrote;
- ``done.json``: created (again create-if-absent) when a build's files are all in place, naming them. The moment
  the result exists for everyone; of two builds that both finish, the first to create it wins and the other's
  files are removed.

The builder rewrites its lock every ``heartbeat_s`` (a beat count in it). A waiter takes over, by creating the next
generation's lock, from a builder that released its lock (its build raised), from one on the waiter's own host
whose process is gone, and from one whose lock it saw unchanged for ``stale_s`` of its own clock (a killed trial
on another node, a lost node): no clocks are compared between machines.

On a folder, ``StageResult.path`` is the result's folder itself; on S3 it is a copy of the result's files in a
temporary folder that lives as long as the process (the trial's worker), since the code that loads a result reads
local files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import socket
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow.fs as pafs

from trainable.config import identity_names

log = logging.getLogger(__name__)

DONE = "done.json"
LOCK = "lock"  # a lock is ``lock.<generation>``, the generation zero-padded
RESULT = "result"  # a build's files are ``result-<token>/``


class StageStoreError(ValueError):
    """A store where stage results cannot be shared safely."""


def stage_key(stage: str, depends: dict[str, Any]) -> str:
    """A short hash of the stage's name and everything it depends on (key order does not matter), under the names
    keys were first hashed with (``config.identity_names``), so a renamed config key keeps every stored result."""
    text = json.dumps({"stage": stage, **identity_names(depends)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StageResult:
    """Where a stage's result is, and whether this call trained it or found it."""

    stage: str
    key: str
    path: Path  # a local folder holding what the build wrote (on S3, this process's copy)
    reused: bool
    info: dict[str, Any]  # done.json: who built it, when, in how long, from what
    location: str  # the result's files on the store, as the user names them (a folder or ``s3://…``)


class StoreObjects:
    """The store's filesystem as the few operations sharing needs: read, write, list, remove, and create-if-absent
    (also what ``python -m search doctor`` checks a store for)."""

    def __init__(self, uri: str) -> None:
        self._s3: Any = None  # the boto3 client, for S3's create-if-absent
        if "://" not in uri or uri.startswith("file://"):
            self._fs: pafs.FileSystem | None = pafs.LocalFileSystem()
            self.root = str(Path(uri.removeprefix("file://")).expanduser().resolve() / "stage_results")
            self.s3 = False
        elif uri.startswith("s3://"):
            self._fs, self._uri = None, uri  # opened on first use: pyarrow asks the server for the bucket's region
            self.root = uri.removeprefix("s3://").partition("?")[0].rstrip("/") + "/stage_results"
            self.s3 = True
        else:
            raise StageStoreError(f"stage results need a store in a folder (local or NFS) or on S3, not {uri}")

    @property
    def fs(self) -> pafs.FileSystem:
        if self._fs is None:
            try:
                self._fs = pafs.FileSystem.from_uri(self._uri)[0]
            except (ValueError, OSError) as exc:
                raise StageStoreError(f"{self._uri}: cannot open it ({exc})") from exc
        return self._fs

    @property
    def local(self) -> bool:
        return not self.s3

    def read(self, path: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def write(self, path: str, data: bytes) -> None:
        """Replace ``path`` whole (on a folder, through a temporary file moved into place)."""
        if self.local:
            self.fs.create_dir(posixpath.dirname(path), recursive=True)
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
            Path(tmp).write_bytes(data)
            os.replace(tmp, path)
        else:
            with self.fs.open_output_stream(path) as out:
                out.write(data)

    def create(self, path: str, data: bytes) -> bool:
        """Write ``path`` only if nothing is there; whether this call wrote it. Of concurrent creates, one wins."""
        if self.local:
            self.fs.create_dir(posixpath.dirname(path), recursive=True)
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
            Path(tmp).write_bytes(data)  # whole before it has the name: a reader never sees half of it
            try:
                os.link(tmp, path)
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        from botocore.exceptions import ClientError

        bucket, _, key = path.partition("/")
        if self._s3 is None:
            self._s3 = _s3_client()
        try:
            self._s3.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except ClientError as exc:  # 412: it exists; 409: another conditional write of it is under way
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise

    def names(self, folder: str) -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        return sorted(posixpath.basename(i.path) for i in infos)

    def remove_tree(self, path: str) -> None:
        try:
            self.fs.delete_dir(path)
        except FileNotFoundError:
            pass

    def put_folder(self, local: Path, path: str) -> None:
        """Move (folder) or upload (S3) the files of ``local`` to ``path``."""
        if self.local:
            os.rename(local, path)
            return
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            with open(file, "rb") as src, self.fs.open_output_stream(f"{path}/{file.relative_to(local).as_posix()}") as out:
                while chunk := src.read(1 << 24):
                    out.write(chunk)

    def get_folder(self, path: str, local: Path) -> None:
        """Download the files under ``path`` into ``local``."""
        for info in self.fs.get_file_info(pafs.FileSelector(path, recursive=True)):
            if info.type == pafs.FileType.File:
                target = local / posixpath.relpath(info.path, path)
                target.parent.mkdir(parents=True, exist_ok=True)
                with self.fs.open_input_stream(info.path) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 24):
                        out.write(chunk)


def _s3_client() -> Any:
    """A boto3 S3 client configured the way pyarrow's is, from the environment (``AWS_ENDPOINT_URL``, the region,
    the keys or a profile): both find the same server."""
    import boto3

    return boto3.client("s3")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class StageStore:
    """``<store>/stage_results``: one folder per stage result, on a folder or an S3 store."""

    def __init__(self, store_uri: str | os.PathLike[str], stale_s: float = 120.0, heartbeat_s: float = 5.0, poll_s: float = 1.0) -> None:
        self.objects = StoreObjects(str(store_uri))
        self.stale_s, self.heartbeat_s, self.poll_s = stale_s, heartbeat_s, poll_s
        self._seen: dict[str, tuple[bytes, float]] = {}  # lock path -> its content and when this process first saw it

    def folder(self, stage: str, key: str) -> str:
        """The result's folder on the store's filesystem (a local path for a folder store)."""
        return f"{self.objects.root}/{stage}/{key}"

    def get(self, stage: str, depends: dict[str, Any], build: Callable[[Path], None], owner: str = "") -> StageResult:
        """The stage's result: found, waited for, or built here by ``build(folder)``, which writes its files into
        ``folder`` (a private temporary folder, moved or uploaded into place only when ``build`` returns)."""
        key = stage_key(stage, depends)
        folder = self.folder(stage, key)
        waited_since = None
        while True:
            found = self._done(folder)
            if found is not None:
                if waited_since is not None:
                    log.info("stage %s %s: built by %s, reused after waiting %.0f s", stage, key, found.get("owner"), time.monotonic() - waited_since)
                return self._result(stage, key, folder, found, reused=True)
            held = self._take(folder, owner)
            if held:
                return self._build(folder, held, stage, key, depends, build, owner)
            if waited_since is None:
                waited_since = time.monotonic()
                log.info("stage %s %s: %s is building it; waiting", stage, key, self._owner(folder))
            time.sleep(self.poll_s)

    def _done(self, folder: str) -> dict[str, Any] | None:
        data = self.objects.read(f"{folder}/{DONE}")
        return None if data is None else json.loads(data)

    def _result(self, stage: str, key: str, folder: str, info: dict[str, Any], reused: bool) -> StageResult:
        stored = f"{folder}/{info['result']}"
        location = stored if self.objects.local else "s3://" + stored
        if self.objects.local:
            return StageResult(stage, key, Path(stored), reused, info, location)
        local = _copies() / hashlib.sha256(stored.encode()).hexdigest()[:16]
        if not local.exists():
            partial = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}")
            self.objects.get_folder(stored, partial)
            partial.mkdir(parents=True, exist_ok=True)  # a build that wrote no file
            os.rename(partial, local)
        return StageResult(stage, key, local, reused, info, location)

    def _locks(self, folder: str) -> list[int]:
        prefix = f"{LOCK}."
        return sorted(int(n[len(prefix):]) for n in self.objects.names(folder) if n.startswith(prefix) and n[len(prefix):].isdigit())

    def _take(self, folder: str, owner: str) -> tuple[int, str] | None:
        """Create the next lock if nobody live holds the latest; (generation, token) if this call now holds it."""
        generations = self._locks(folder)
        generation = 0
        if generations:
            latest = f"{folder}/{LOCK}.{generations[-1]:06d}"
            held = self.objects.read(latest)
            if held is None or not self._gone(latest, held):
                return None
            generation = generations[-1] + 1
        token = uuid.uuid4().hex
        record = {"owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "since": _now(), "token": token, "beat": 0}
        if not self.objects.create(f"{folder}/{LOCK}.{generation:06d}", json.dumps(record).encode()):
            return None
        if generation:
            log.warning("stage %s: %s stopped building it; building it here", folder, _who(json.loads(held)))
        return generation, token

    def _gone(self, path: str, data: bytes) -> bool:
        """Whether the lock's builder is gone: released it, a process of this host that no longer exists, or
        silent (its lock unchanged) for ``stale_s`` as this process has watched it."""
        try:
            held = json.loads(data)
        except json.JSONDecodeError:
            held = {}
        if held.get("released"):
            return True
        if held.get("host") == socket.gethostname() and isinstance(held.get("pid"), int) and not _pid_alive(held["pid"]):
            return True
        seen = self._seen.get(path)
        if seen is None or seen[0] != data:
            self._seen[path] = (data, time.monotonic())
            return False
        return time.monotonic() - seen[1] >= self.stale_s

    def _owner(self, folder: str) -> str:
        generations = self._locks(folder)
        data = self.objects.read(f"{folder}/{LOCK}.{generations[-1]:06d}") if generations else None
        try:
            return _who(json.loads(data)) if data else "another trial"
        except json.JSONDecodeError:
            return "another trial"

    def _build(
        self, folder: str, held: tuple[int, str], stage: str, key: str, depends: dict[str, Any], build: Callable[[Path], None], owner: str
    ) -> StageResult:
        generation, token = held
        lock = f"{folder}/{LOCK}.{generation:06d}"
        name = f"{RESULT}-{token}"
        started = time.monotonic()
        if self.objects.local:
            os.makedirs(folder, exist_ok=True)
        # On a folder the build writes beside its result, so that moving it into place is a rename.
        scratch = tempfile.TemporaryDirectory(prefix=f".building-{token}-", dir=folder if self.objects.local else None)
        placed = False
        try:
            with scratch, self._heartbeat(lock, token):
                work = Path(scratch.name) / RESULT
                work.mkdir()
                build(work)
                info = {"stage": stage, "key": key, "depends": depends, "owner": owner, "result": name,
                        "seconds": round(time.monotonic() - started, 3), "written_at": _now()}  # fmt: skip
                self.objects.put_folder(work, f"{folder}/{name}")
                placed = True
                if not self.objects.create(f"{folder}/{DONE}", json.dumps(info, sort_keys=True, default=str).encode()):
                    # This builder was taken for dead and another finished first: theirs stands.
                    log.warning("stage %s %s: another trial built it meanwhile; using theirs", stage, key)
                    self.objects.remove_tree(f"{folder}/{name}")
                    return self._result(stage, key, folder, self._done(folder) or {}, reused=True)
        except BaseException:
            if placed:
                self.objects.remove_tree(f"{folder}/{name}")
            self._release(lock, token)
            raise
        self._release(lock, token)
        log.info("stage %s %s: built in %.1f s", stage, key, info["seconds"])
        return self._result(stage, key, folder, info, reused=False)

    def _release(self, lock: str, token: str) -> None:
        """Mark the lock released (never deleted: generations only grow, so a later lock is always a newer one)."""
        data = self.objects.read(lock)
        if data is not None and json.loads(data).get("token") == token:
            self.objects.write(lock, json.dumps({**json.loads(data), "released": _now()}).encode())

    @contextmanager
    def _heartbeat(self, lock: str, token: str) -> Iterator[None]:
        """Rewrite the lock every ``heartbeat_s`` while the build runs, with one more beat each time, so that
        waiters see its builder is alive."""
        stop = threading.Event()

        def beat() -> None:
            count = 0
            while not stop.wait(self.heartbeat_s):
                data = self.objects.read(lock)
                if data is None or json.loads(data).get("token") != token:
                    return
                count += 1
                try:
                    self.objects.write(lock, json.dumps({**json.loads(data), "beat": count}).encode())
                except OSError as exc:  # a store that did not answer this time: the next beat tries again
                    log.warning("stage lock %s: heartbeat failed (%s)", lock, exc)

        thread = threading.Thread(target=beat, name="stage-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


_COPIES: list[tempfile.TemporaryDirectory] = []


def _copies() -> Path:
    """This process's folder of downloaded stage results (from an object store): a Train worker is one trial's, so
    each trial downloads the results it loads once. ``remove_copies`` ends it."""
    if not _COPIES:
        _COPIES.append(tempfile.TemporaryDirectory(prefix="stage-results-"))
    return Path(_COPIES[0].name)


def remove_copies() -> None:
    """Delete this process's downloaded stage results. Called when a trial's training ends, whichever way: Ray ends a
    Train worker without running Python's exit handlers, so a copy left to ``TemporaryDirectory``'s finalizer would
    stay in the node's temp dir after every TimeBalance trial on an S3 store."""
    while _COPIES:
        _COPIES.pop().cleanup()


def _who(held: dict[str, Any]) -> str:
    return f"{held.get('owner') or 'a trial'} (pid {held.get('pid')} on {held.get('host')})"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()
