"""What stays in MODEL_DIR: the active version, the newest
``SMLREC_KEEP_VERSIONS`` versions, every pinned one and the newest of each
configured strategy (what choosing that strategy serves), and the checkpoint the
store points at for each strategy (it holds all the state the strategy needs to go
on: older checkpoints are never read again). Everything else is deleted after
each boundary; a deleted version's row stays (with its metrics), marked
``removed_at``. Temporary leftovers of interrupted saves go too, once old
enough not to be a save in progress.
"""

from __future__ import annotations

import logging

from store import ArtifactStore, Store
from store.lineup import latest_version_of
from worker.checkpoint import checkpoint_of, current_checkpoint

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "state-p"


def prune(
    store: Store, artifacts: ArtifactStore, keep_versions: int, lineup: tuple[str, ...]
) -> list[str]:
    """Delete what the retention does not keep (``lineup``: the configured
    strategies); returns the paths deleted."""
    versions = store.list_versions()  # newest first
    newest = {v.version for v in versions[:keep_versions]}
    for name in lineup:
        latest = latest_version_of(store, name)
        if latest is not None:
            newest.add(latest.version)
    keep: set[str] = set()
    removed: list[str] = []
    for info in versions:
        if info.active or info.pinned or info.version in newest:
            keep.add(info.path)
            continue
        if info.removed_at is None:
            if artifacts.remove(info.path):
                removed.append(info.path)
            store.mark_removed(info.version)
            log.info("retention: removed the artifact of version %d", info.version)
    for checkpoint in [current_checkpoint(store), *(checkpoint_of(store, n) for n in lineup)]:
        if checkpoint is not None:
            keep.add(checkpoint.path)
    for path in artifacts.list_files():
        if path.startswith(CHECKPOINT_PREFIX) and path not in keep and artifacts.remove(path):
            removed.append(path)
            log.info("retention: removed strategy checkpoint %s", path)
    removed += artifacts.remove_orphans(keep)
    return removed
