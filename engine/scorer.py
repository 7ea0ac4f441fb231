"""Top-K scoring on a :class:`ServingModel`: one matrix product per batch of users,
seen items masked with -inf, then an exact blockwise top-k. No Python loop runs
over items. Large catalogs are searched through int8 codes first
(engine.quantized) on CPUs where int8 products are fast (the service decides
at start), which returns the same top k several times faster there.

score(u, i) = U[u] · V[i] + b_i (the user bias does not change a user's ranking).

Blockwise top-k: the items are cut into blocks of ``SCORE_BLOCK`` (the item
table is padded to a multiple, padding scored -inf). Let tau be the k-th largest
block maximum. At least k items score >= tau (one per such block), so the k-th
best score is >= tau and every item that must be in the top k lies in a block
whose maximum is >= tau; the k blocks with the largest maxima hold all of those
that beat tau, and enough that equal it. So the top k among those k blocks'
items is the exact top k, found after reading each score once for the block
maxima instead of a full ``topk`` per row.

The (users x items) score matrix is written into a buffer each scoring thread
keeps, so no request allocates (and page-faults) tens of megabytes. Chunks of
``ITEM_MAJOR_MIN_USERS`` users or more are scored item-major, tile by tile (the
product of a slice of the item table with all the chunk's users, then that
slice's block maxima while it is still in cache), with the users padded to
whole ``USER_LANES``: cheaper per user than the user-major product from 16 users
on (the measured figures behind this file's constants are in bench/RESULTS.md,
"Why the serving engine's constants are what they are").
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from engine.holder import SCORE_BLOCK, ServingModel
from engine.quantized import INT8_MAX_K, QuantizedItems

# Score at most this many (user, item) cells at once: 64 MiB of float32 per
# scoring thread, 160 users at 100,000 items (chunks are whole ``USER_LANES``).
MAX_CELLS = 1 << 24
# Chunks of this many users or more are scored item-major (see the module doc).
ITEM_MAJOR_MIN_USERS = 16
# Item-major scores have this many user columns, padded with zero users: torch's
# block maximum over an (items x users) tile is many times faster when the users are
# a multiple of 32, and the padded product costs about what the narrower one does.
USER_LANES = 32
# Cells of one item-major tile (1 MiB of float32 scores: about an L2 cache).
TILE_CELLS = 1 << 18

# Users per chunk on the int8 path: its scratch holds n_items / 4 x 256 int32 group
# maxima (25 MiB per scoring thread at 100,000 items).
QUANTIZED_CHUNK = 256
# Fewer users than this are scored in float32 even when int8 codes exist: the int8
# path runs about 60 small tensor operations per chunk and retakes the GIL after each
# one, which costs most in the smallest batches, while the event loop runs Python.
QUANTIZED_MIN_USERS = 16

_buffers = threading.local()


def _score_buffer(cells: int) -> torch.Tensor:
    """This thread's scratch buffer of at least ``cells`` float32."""
    buffer: torch.Tensor | None = getattr(_buffers, "scores", None)
    if buffer is None or buffer.numel() < cells:
        buffer = torch.empty(cells, dtype=torch.float32)
        _buffers.scores = buffer
    return buffer


@dataclass(frozen=True)
class TopK:
    """Item indices by score descending and their scores."""

    items: np.ndarray  # (<= k,) int64
    scores: np.ndarray  # (<= k,) float32


def seen_pairs(
    indptr: np.ndarray, items: np.ndarray, users: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) pairs of a CSR restricted to ``users`` (row r = users[r])."""
    starts, ends = indptr[users], indptr[users + 1]  # (B,), (B,)
    lengths = ends - starts
    total = int(lengths.sum())
    rows = np.repeat(np.arange(len(users), dtype=np.int64), lengths)  # (total,)
    # position of each pair in ``items``: its row's start plus its rank within the row
    first = np.cumsum(lengths) - lengths  # (B,) offset of each row in the output
    positions = np.repeat(starts - first, lengths) + np.arange(total, dtype=np.int64)
    return rows, items[positions]


def extra_pairs(extra: Sequence[np.ndarray | None], n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) pairs from one array of item indices per row (None: nothing);
    items outside the model's table are dropped."""
    lengths = np.array([0 if e is None else len(e) for e in extra], dtype=np.int64)
    if not lengths.sum():
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    rows = np.repeat(np.arange(len(extra), dtype=np.int64), lengths)
    cols = np.concatenate([e for e in extra if e is not None]).astype(np.int64, copy=False)
    keep = (cols >= 0) & (cols < n_items)
    return rows[keep], cols[keep]


def top_k(
    model: ServingModel,
    users: Sequence[int] | np.ndarray,
    k: int,
    *,
    exclude_seen: bool = True,
    extra_seen: Sequence[np.ndarray | None] | None = None,
    hidden: np.ndarray | None = None,
    max_cells: int = MAX_CELLS,
) -> list[TopK]:
    """Top ``k`` items for each of ``users`` (dense indices known to ``model``).

    With ``exclude_seen``, items in the model's seen CSR and in ``extra_seen``
    (one array per user, e.g. interactions logged since the model was trained)
    are left out, so a user may get fewer than ``k`` items; the ``hidden`` items
    are left out of every user's answer either way. The users are scored
    chunk by chunk with the search :func:`search_for` picks; every search gives
    the float32 top k."""
    user_idx = np.asarray(users, dtype=np.int64)
    if len(user_idx) == 0 or model.n_items == 0:
        return [TopK(np.empty(0, np.int64), np.empty(0, np.float32)) for _ in user_idx]
    k = min(k, model.n_items)
    search = search_for(model, len(user_idx), k, max_cells)
    results: list[TopK] = []
    for start in range(0, len(user_idx), search.chunk):
        part = user_idx[start : start + search.chunk]
        extra = extra_seen[start : start + search.chunk] if extra_seen is not None else None
        rows, cols = excluded_pairs(model, part, exclude_seen, extra, hidden)
        with torch.inference_mode():
            values, indices = search(model, part, k, rows, cols)
        finite = np.isfinite(values)
        if finite.all():  # the common case: k items for everyone, rows as they are
            results.extend(map(TopK, indices, values))
        else:
            results.extend(TopK(indices[r][finite[r]], values[r][finite[r]])
                           for r in range(len(part)))
    return results


class Search(Protocol):
    """One way to find a chunk of users' top k: ``(values, items)``, each (B, k),
    values descending and -inf where fewer than k items remain once the pairs
    ``(rows, cols)`` (row in the chunk, item) are left out."""

    @property
    def chunk(self) -> int:
        """Users per chunk."""
        ...

    def __call__(self, model: ServingModel, users: np.ndarray, k: int, rows: np.ndarray,
                 cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class Float32Search:
    """Every item scored in float32, then the block top-k (:func:`_exact`)."""

    chunk: int

    def __call__(self, model: ServingModel, users: np.ndarray, k: int, rows: np.ndarray,
                 cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _exact(model, users, k, rows, cols)


@dataclass(frozen=True)
class Int8Search:
    """Candidates from the int8 codes, rescored in float32 (:func:`_via_int8`)."""

    quantized: QuantizedItems
    chunk: int = QUANTIZED_CHUNK

    def __call__(self, model: ServingModel, users: np.ndarray, k: int, rows: np.ndarray,
                 cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _via_int8(self.quantized, model, users, k, rows, cols)


def search_for(model: ServingModel, n_users: int, k: int, max_cells: int = MAX_CELLS) -> Search:
    """The search for ``n_users`` users at ``k``: through the int8 codes where the
    model has them (large catalogs, on CPUs where int8 products are fast), ``k`` is
    at most ``INT8_MAX_K`` and at least ``QUANTIZED_MIN_USERS`` users are asked at
    once; else float32, in chunks of at most ``max_cells`` (user, item) scores.
    (A user's precomputed list, engine.ranked, is looked up before either.)"""
    if model.quantized is not None and k <= INT8_MAX_K and n_users >= QUANTIZED_MIN_USERS:
        return Int8Search(model.quantized)
    return Float32Search(_float_chunk(model, max_cells))


def _float_chunk(model: ServingModel, max_cells: int) -> int:
    """Users per float32 chunk: as many as ``max_cells`` allow, in whole
    ``USER_LANES`` when there are that many."""
    chunk = max(1, max_cells // model.item_emb_padded.shape[0])
    return chunk - chunk % USER_LANES if chunk >= USER_LANES else chunk


def excluded_pairs(
    model: ServingModel,
    users: np.ndarray,
    exclude_seen: bool,
    extra_seen: Sequence[np.ndarray | None] | None,
    hidden: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) pairs to leave out of ``users``' answers: with ``exclude_seen``
    their seen items and ``extra_seen``, and the ``hidden`` items for every row."""
    rows = cols = np.empty(0, dtype=np.int64)
    if exclude_seen:
        rows, cols = seen_pairs(model.seen_indptr, model.seen_items, users)
        if extra_seen is not None:
            more_rows, more_cols = extra_pairs(extra_seen, model.n_items)
            rows, cols = np.concatenate([rows, more_rows]), np.concatenate([cols, more_cols])
    if hidden is not None and len(hidden):
        rows = np.concatenate([rows, np.repeat(np.arange(len(users), dtype=np.int64),
                                               len(hidden))])
        cols = np.concatenate([cols, np.tile(hidden.astype(np.int64, copy=False), len(users))])
    return rows, cols


def _exact(
    model: ServingModel, users: np.ndarray, k: int, rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Float32 scores of every item, pairs (rows, cols) masked, then block top-k:
    values (B, k) descending (-inf where fewer remain) and their items."""
    n_padded = model.item_emb_padded.shape[0]
    user_emb = model.user_emb.index_select(0, torch.from_numpy(users))  # (B, d)
    if len(users) >= ITEM_MAJOR_MIN_USERS and n_padded // SCORE_BLOCK >= 4 * k:
        width = -(-len(users) // USER_LANES) * USER_LANES
        cells = _score_buffer(width * n_padded)[: width * n_padded]
        values, indices = _item_major_top_k(model, user_emb, k, rows, cols,
                                            cells.view(n_padded, width))
        return values.numpy(), indices.numpy()
    scores = _score_buffer(len(users) * n_padded)[: len(users) * n_padded].view(
        len(users), n_padded)  # (B, n_padded)
    torch.addmm(model.item_bias_padded, user_emb, model.item_emb_padded.T, out=scores)
    if len(rows):
        scores[torch.from_numpy(rows), torch.from_numpy(cols)] = -torch.inf
    values, indices = block_top_k(scores, k)
    return values.numpy(), indices.numpy()


def _item_major_top_k(
    model: ServingModel, user_emb: torch.Tensor, k: int, rows: np.ndarray, cols: np.ndarray,
    scores: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The block top-k of :func:`block_top_k` on scores laid out item-major,
    ``scores`` (n_padded, W), computed and reduced to block maxima one tile of
    items at a time; pairs (rows, cols) are masked in their tile first. Columns
    past the B users of ``user_emb`` (B, d) score zero users and are dropped.
    Needs at least 4k blocks."""
    n_padded, width = scores.shape
    n_users = user_emb.shape[0]
    n_blocks = n_padded // SCORE_BLOCK
    users_t = torch.zeros(user_emb.shape[1], width)  # (d, W)
    users_t[:, :n_users] = user_emb.T
    bias = model.item_bias_padded[:, None]  # (n_padded, 1)
    block_max = torch.empty(n_blocks, width)  # (n_blocks, W)
    tile = max(SCORE_BLOCK, TILE_CELLS // width // SCORE_BLOCK * SCORE_BLOCK)
    order = np.argsort(cols, kind="stable")
    seen_rows = torch.from_numpy(rows[order])
    seen_cols = torch.from_numpy(cols[order])
    bounds = np.searchsorted(cols[order], np.arange(0, n_padded + tile, tile))
    for number, start in enumerate(range(0, n_padded, tile)):
        stop = min(start + tile, n_padded)
        part = scores[start:stop]  # (T, W)
        torch.addmm(bias[start:stop], model.item_emb_padded[start:stop], users_t, out=part)
        first, last = bounds[number], bounds[number + 1]
        if last > first:
            part[seen_cols[first:last] - start, seen_rows[first:last]] = -torch.inf
        torch.amax(part.view(-1, SCORE_BLOCK, width), dim=1,
                   out=block_max[start // SCORE_BLOCK : stop // SCORE_BLOCK])
    best = torch.topk(block_max[:, :n_users].T, k, dim=1, sorted=False).indices  # (B, k)
    by_block = scores.view(n_blocks, SCORE_BLOCK, width)
    candidates = by_block[best, :, torch.arange(n_users)[:, None]]  # (B, k, block)
    top = torch.topk(candidates.reshape(n_users, k * SCORE_BLOCK), k, dim=1, sorted=True)
    columns = best.gather(1, top.indices // SCORE_BLOCK) * SCORE_BLOCK \
        + top.indices % SCORE_BLOCK  # (B, k)
    return top.values, columns


def _via_int8(
    quantized: QuantizedItems,
    model: ServingModel,
    users: np.ndarray,
    k: int,
    rows: np.ndarray,
    cols: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`QuantizedItems.search`, with the users it cannot answer (too few
    clean blocks: they have seen most of the catalog) scored by :func:`_exact`."""
    user_emb = model.user_emb.index_select(0, torch.from_numpy(users))  # (B, d)
    values_t, indices_t, answered_t = quantized.search(
        user_emb, k, model.item_emb_padded, model.item_bias_padded, rows, cols)
    values, indices = values_t.numpy(), indices_t.numpy()
    answered = answered_t.numpy()
    if not answered.all():
        missing = np.flatnonzero(~answered)
        keep = np.isin(rows, missing)
        renumber = np.full(len(users), -1, dtype=np.int64)
        renumber[missing] = np.arange(len(missing))
        more_values, more_indices = _exact(model, users[missing], k, renumber[rows[keep]],
                                           cols[keep])
        values, indices = values.copy(), indices.copy()
        values[missing], indices[missing] = more_values, more_indices
    return values, indices


def block_top_k(
    scores: torch.Tensor, k: int, block: int = SCORE_BLOCK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``torch.topk(scores, k, dim=1)`` (values descending, their column
    indices) through the block maxima (see the module doc). ``scores``: (B, n)
    with n a multiple of ``block``; plain topk where blocks would not pay."""
    n_rows, n = scores.shape
    n_blocks = n // block
    if n % block or n_blocks < 4 * k:
        top = torch.topk(scores, k, dim=1, sorted=True)
        return top.values, top.indices
    blocks = scores.view(n_rows, n_blocks, block)  # (B, n_blocks, block)
    best = torch.topk(blocks.amax(dim=2), k, dim=1, sorted=False).indices  # (B, k)
    candidates = blocks.gather(1, best.unsqueeze(2).expand(n_rows, k, block))  # (B, k, block)
    top = torch.topk(candidates.reshape(n_rows, k * block), k, dim=1, sorted=True)
    position = top.indices  # (B, k) in the candidates
    columns = best.gather(1, position // block) * block + position % block  # (B, k)
    return top.values, columns


def rank_popular(
    popular: np.ndarray, k: int, exclude: np.ndarray | None = None
) -> TopK:
    """The first ``k`` items of a popularity list (most popular first), skipping
    ``exclude``. Score: N - rank in the full list of N items, so it descends and
    does not depend on what a user has seen."""
    n = len(popular)
    scores = (n - np.arange(n)).astype(np.float32)  # (N,)
    if exclude is not None and len(exclude):
        keep = ~np.isin(popular, exclude)
        popular, scores = popular[keep], scores[keep]
    return TopK(popular[:k].astype(np.int64, copy=False), scores[:k])
