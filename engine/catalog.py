"""The item metadata a replica serves with: which items are hidden (never
recommended) and which belong to each category.

:class:`Catalog` keeps every item's metadata as the store holds it, by external
id, and follows the store's revision counter: the version sync polls it and reads
only the rows written since (:meth:`Catalog.refresh`). For each served model it
derives an :class:`ItemView` in the model's item indices: the hidden items, a
mask of the visible ones, and per category the sorted indices of its visible
items, with that category's rows of the item table gathered into one contiguous
matrix the first time a request asks for it (so a filtered request multiplies a
category's sub-matrix, not the whole catalogue). A view is built once per model
and metadata revision, off the request path (after each refresh, and before a
new version serves); requests read the newest view of their model. Items the
model does not know are in no view: they cannot be recommended yet.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable

import numpy as np
import torch

from engine.holder import ServingModel
from store import ItemInfo, Store, StoreUnavailable

log = logging.getLogger(__name__)

# Category sub-matrices kept per view, in item rows, as a multiple of the catalogue:
# past it a category's rows are gathered per request instead.
CACHED_ROWS_FACTOR = 2

_NO_ITEMS = np.empty(0, dtype=np.int64)


class ItemView:
    """One model's hidden items and categories at one metadata revision."""

    def __init__(self, model: ServingModel, revision: int, hidden: np.ndarray,
                 categories: dict[str, np.ndarray]) -> None:
        # the model's tables, not the model: a view must not keep its version alive
        # (views are held weakly by their model, which a strong reference would pin)
        self._item_emb, self._item_bias = model.item_emb, model.item_bias
        self._n_items = model.n_items
        self.revision = revision
        self.hidden = hidden  # (n_hidden,) int64 sorted item indices
        self.visible: np.ndarray | None = None  # (n_items,) bool; None: nothing hidden
        if len(hidden):
            self.visible = np.ones(model.n_items, dtype=bool)
            self.visible[hidden] = False
        self._categories = categories  # name -> (m,) int64 sorted visible item indices
        self._matrices: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._cached_rows = 0
        self._lock = threading.Lock()

    @property
    def filters(self) -> bool:
        """Whether anything is hidden (else unfiltered answers need no view)."""
        return self.visible is not None

    def category(self, name: str) -> np.ndarray:
        """The visible items of category ``name``, sorted (empty: none, or unknown)."""
        return self._categories.get(name, _NO_ITEMS)

    def matrix(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The category's rows of the item table, (m, d), and their biases, (m,)."""
        cached = self._matrices.get(name)
        if cached is not None:
            return cached
        rows = torch.from_numpy(self.category(name))
        pair = (self._item_emb.index_select(0, rows),  # (m, d) contiguous
                self._item_bias.index_select(0, rows))  # (m,)
        with self._lock:
            if self._cached_rows + len(rows) <= CACHED_ROWS_FACTOR * self._n_items:
                self._matrices[name] = pair
                self._cached_rows += len(rows)
        return pair

    def allows_visible(self, items: np.ndarray) -> np.ndarray:
        """Which of ``items`` (any shape of item indices) are not hidden."""
        if self.visible is None:
            return np.ones(items.shape, dtype=bool)
        return np.asarray(self.visible[items])

    def in_category(self, name: str) -> Callable[[np.ndarray], np.ndarray]:
        """A test of item indices (any shape) for membership of ``name``'s visible items."""
        members = self.category(name)

        def allowed(items: np.ndarray) -> np.ndarray:
            if not len(members):
                return np.zeros(items.shape, dtype=bool)
            at = np.minimum(np.searchsorted(members, items), len(members) - 1)
            return np.asarray(members[at] == items)

        return allowed


class Catalog:
    """Every item's metadata by external id, following the store, and each served
    model's :class:`ItemView` of it."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._entries: dict[str, ItemInfo] = {}
        self._hidden: set[str] = set()
        self.revision = 0  # the store revision everything here reflects
        self._views: weakref.WeakKeyDictionary[ServingModel, ItemView] = (
            weakref.WeakKeyDictionary())
        self._wake: Callable[[], None] | None = None

    def on_write(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` when this replica wrote metadata (:meth:`written`): the
        version sync refreshes at once, and a burst of writes costs one refresh."""
        self._wake = wake

    def written(self, model: ServingModel | None) -> None:
        """This replica stored metadata: refresh soon (at once without a sync)."""
        if self._wake is not None:
            self._wake()
        else:
            self.refresh(model)

    @property
    def empty(self) -> bool:
        """No item has metadata: every answer is unfiltered."""
        return not self._entries

    @property
    def hides_any(self) -> bool:
        """Some item is hidden."""
        return bool(self._hidden)

    def refresh(self, model: ServingModel | None) -> bool:
        """Read the metadata written since the last refresh and rebuild ``model``'s
        view; True if anything changed. Logs (does not raise) a database outage."""
        try:
            if self._store.item_revision() == self.revision:
                return False
            changed = self._store.items_since(self.revision)
        except StoreUnavailable as error:
            log.debug("item metadata not checked: %s", error)
            return False
        if not changed:
            return False
        with self._lock:
            for info in changed:
                self._entries[info.item_id] = info
                if info.hidden:
                    self._hidden.add(info.item_id)
                else:
                    self._hidden.discard(info.item_id)
            self.revision = max(self.revision, changed[-1].revision)
        if model is not None:
            self.prepare(model)
        return True

    def prepare(self, model: ServingModel) -> None:
        """Build ``model``'s view at the current revision (before it serves, and
        after each refresh)."""
        self._build(model)

    def _build(self, model: ServingModel) -> ItemView:
        began = time.perf_counter()
        with self._lock:
            revision, entries = self.revision, list(self._entries.values())
        hidden: list[int] = []
        members: dict[str, list[int]] = {}
        index = model.item_index
        for info in entries:
            idx = index.get(info.item_id)
            if idx is None:
                continue
            if info.hidden:
                hidden.append(idx)
                continue
            for name in info.categories:
                members.setdefault(name, []).append(idx)
        view = ItemView(model, revision, np.unique(np.asarray(hidden, dtype=np.int64)),
                        {name: np.unique(np.asarray(items, dtype=np.int64))
                         for name, items in members.items()})
        with self._lock:
            known = self._views.get(model)
            if known is None or known.revision <= revision:
                self._views[model] = view
        log.debug("item view of model version %d at revision %d built in %.1f ms",
                  model.version, revision, 1e3 * (time.perf_counter() - began))
        return view

    def view(self, model: ServingModel) -> ItemView:
        """The newest view of ``model`` (built now if it has none yet)."""
        known = self._views.get(model)
        return known if known is not None else self._build(model)

    def hidden_of(self, model: ServingModel) -> np.ndarray | None:
        """``model``'s hidden items (None: none)."""
        if not self._hidden:
            return None
        return self.view(model).hidden

    def allows(self, item_id: str, category: str | None) -> bool:
        """Whether the item may be answered: not hidden, and in ``category`` when one
        is asked (for answers outside a model's indices: the popularity fallback)."""
        if item_id in self._hidden:
            return False
        if category is None:
            return True
        info = self._entries.get(item_id)
        return info is not None and category in info.categories
