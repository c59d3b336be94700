"""What ``search check`` and ``search run`` refuse before Ray starts: one path for both, so that a space ``check``
passes is a space ``run`` starts.

``search.space.load`` validates the file, the overrides and every value a parameter can take; this adds what
depends on where the search runs: the store (its URI, and a folder a pipeline method can share stages in), the
search's name, and on a local run the dataset's folder. Nothing here imports Ray or torch, or writes anything.
"""

from __future__ import annotations

import os
from datetime import datetime

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


def preflight(space: Space, store: Store, name: str | None, address: str | None) -> str:
    """Refuse what the search could not run with; return its id (``name``, or the space's name and the time)."""
    search_id = check_search_id(name or f"{space.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    check_stage_store(space, store.uri)
    if is_local(address):  # a local run reads the dataset from this machine
        try:
            TrainConfig.parse(space.base).check_paths()
        except ConfigError as exc:
            raise SpaceError(f"{space.path}: base.{exc}") from None
    return search_id


def is_local(address: str | None) -> bool:
    """Whether the search starts its own Ray instance on this machine (no ``--address``, not inside a job)."""
    return address is None and "RAY_ADDRESS" not in os.environ


def check_stage_store(space: Space, store_uri: str) -> None:
    """A pipeline method shares its stage results through files under the store (``trainable.stages``): refuse a
    store where that cannot work before any trial starts, not in every trial once it has started."""
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
