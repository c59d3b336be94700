"""What ``search check`` and ``search run`` refuse before Ray starts: one path for both, so that a space ``check``
passes is a space ``run`` starts.

``search.space.load`` validates the file, the overrides and every value a parameter can take; this adds what
depends on where the search runs: the store (its URI, and one a pipeline method can share stages in), the
search's name, on a local run the dataset's folder, and for a search the store has already, whether this run
is the same search: a resume whose space file, overrides, seeds or resources differ from the search's is
refused unless it is recorded as a new revision (``--revise``), so the provenance a report states is what the
trials ran with. Nothing here imports Ray or torch, or writes anything.
"""

from __future__ import annotations

import difflib
import json
import os
from datetime import datetime
from typing import Any

from results.store import Store, StoreError, check_search_id
from search.space import Space, SpaceError
from trainable import catalog
from trainable.config import ConfigError, TrainConfig
from trainable.stages import StageStore, StageStoreError


def open_store(uri: str) -> Store:
    """The store at ``uri``; a URI pyarrow cannot open is a ``StoreError`` naming it, not pyarrow's traceback."""
    if not uri.strip():
        raise StoreError("--store: empty; give a folder or a URI such as s3://bucket/results")
    try:
        return Store(uri)
    except Exception as exc:  # pyarrow.lib.ArrowInvalid and friends: the URI's scheme or form is wrong
        raise StoreError(f"--store {uri}: {str(exc).splitlines()[0]}") from None


def preflight(space: Space, store: Store, name: str | None, address: str | None, revise: bool = False) -> tuple[str, int]:
    """Refuse what the search could not run with; return its id (``name``, or the space's name and the time) and
    the revision this run records (1 for a new search)."""
    search_id = check_search_id(name or f"{space.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    check_stage_store(space, store.uri)
    if is_local(address):  # a local run reads the dataset from this machine
        try:
            TrainConfig.parse(space.base).check_paths()
        except ConfigError as exc:
            raise SpaceError(f"{space.path}: base.{exc}") from None
    from search.resume import Earlier  # DuckDB over the store: only here, where a name may be a search it has

    earlier = Earlier.load(store, search_id, space.spec.metric)
    return search_id, revision(space, store, search_id, earlier.search, revise)


def provenance(space: Space) -> dict[str, str]:
    """What makes two runs of a search the same search: the space file as run, the overrides, seeds and resources
    (``--set``, ``--seeds``, ``--workers``… applied). The ``searches`` and ``runs`` rows record them."""
    return {
        "space_yaml": space.text,
        "overrides": json.dumps(space.overrides, sort_keys=True),
        "seeds": json.dumps(space.spec.seed_list),
        "resources": json.dumps(space.spec.resources.model_dump()),  # with --workers/--cpus-.../--gpus-... applied
    }


class RevisionError(SpaceError):
    """A resume that would run the search with other settings than it ran with; ``diff`` shows how."""

    def __init__(self, message: str, diff: list[str]) -> None:
        super().__init__(message)
        self.diff = diff


def revision(space: Space, store: Store, search_id: str, latest: dict[str, Any] | None, revise: bool) -> int:
    """The revision this run of ``search_id`` records: 1 for a new search, the latest one again for a resume with
    the same settings, the next one for a changed resume that ``revise`` allows; refused otherwise."""
    if latest is None:
        return 1
    current = int(latest.get("revision") or 1)
    now = provenance(space)
    changed = [key for key, value in now.items() if key in latest and latest[key] is not None and latest[key] != value]
    if not changed:
        return current
    if revise:
        return current + 1
    parts, diff = [], []
    for key in changed:
        if key == "space_yaml":
            lines = list(difflib.unified_diff(latest[key].splitlines(), now[key].splitlines(), "as run", space.path, lineterm="", n=0))
            diff += lines
            parts.append(f"the space file ({sum(1 for x in lines[2:] if x[:1] in '+-')} lines differ)")
        else:
            parts.append(f"{key} {latest[key]} -> {now[key]}")
    raise RevisionError(
        f"search {search_id} in {store.uri} ran revision {current} with other settings: {'; '.join(parts)}; "
        f"run it as a new search with another --name, or add --revise to record it as revision {current + 1} of {search_id}",
        diff,
    )


def is_local(address: str | None) -> bool:
    """Whether the search starts its own Ray instance on this machine (no ``--address``, not inside a job)."""
    return address is None and "RAY_ADDRESS" not in os.environ


def check_stage_store(space: Space, store_uri: str) -> None:
    """A pipeline method shares its stage results through the store's create-if-absent (``trainable.stages``: a
    folder's or S3's): refuse a store without one before any trial starts, not in every trial once it has started."""
    methods = {space.base.get("method", TrainConfig.model_fields["method"].default)}
    methods |= {cell["method"] for cell in space.grid_cells() if "method" in cell}
    if "method" in space.spec.space:
        methods |= set(space.spec.space["method"].examples())
    staged = sorted(m for m in methods if catalog.METHODS[m].stages)
    if staged:
        try:
            StageStore(store_uri)
        except StageStoreError as exc:
            raise StoreError(f"{space.path}: method {', '.join(staged)}: {exc}") from None
