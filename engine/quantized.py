"""Exact top-k through an int8 candidate pass.

Scoring every item in float32 costs n x d multiply-adds per user. The same
product in int8 (VNNI on x86) runs several times faster, and its error has a
bound, so it can choose candidates without losing any: the candidates are then
rescored in float32, and the answer is the float32 top k, not an approximation.

Notation, per user: x = [u, beta] and, per item, y_i = [v_i, b_i / beta] (beta
brings the bias column to the embeddings' range), so the score is s_i = x . y_i.
Items are quantized once per version with one scale, y_i ~ sy * qy_i; a user at
request time, x ~ sx * qx (int8 codes). The int8 score is
a_i = sx * sy * (qx . qy_i), and

    s_i - a_i = x . (y_i - sy qy_i) + (x - sx qx) . (sy qy_i)
    |s_i - a_i| <= |x| E_b + |x - sx qx| N_b =: eps_b        (Cauchy-Schwarz)

for item i of block b (``SCORE_BLOCK`` items), with E_b = max |y_i - sy qy_i| and
N_b = max |sy qy_i| over the block (Euclidean norms), fixed per version. A margin
covers float32 rounding, in the rescoring and in the bounds themselves.

The search. Pass 1 keeps, for each group of ``GROUP`` items, its largest int8
score, and from those each block's largest, A_b. A block is clean for a user
when it holds no item the user has seen and no padding; a clean block holds an
unseen item scoring at least A_b - eps_b. With tau the k-th largest A_b - eps_b
over clean blocks, k distinct unseen items score at least tau, so every item of
the top k does too, and for its group g in block b, A_g + eps_b >= tau. The
blocks with A_b + eps_b >= tau, then their groups with A_g + eps_b >= tau, are
the candidates; their items are rescored in float32, seen ones dropped, and the
top k taken among them. A user with fewer than k clean blocks gets no answer here
(the caller scores it in float32). ``tests/engine/test_quantized.py`` checks the
bound on every (user, item) pair and the answers against float32 scoring.

Whether int8 pays depends on the CPU: with int8 dot-product instructions (AVX-512
VNNI) the product runs several times faster than float32, without them torch's int8
kernel is many times slower (bench/RESULTS.md has both).
:func:`int8_speedup` measures the ratio once per process, and
``SMLREC_INT8_SCORING=auto`` (the default) uses int8 only where it pays.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

GROUP = 4  # items per group of pass 1 (SCORE_BLOCK must be a multiple)
MIN_ITEMS = 8192  # below this many items float32 scoring is as fast: no int8 tables
INT8_MAX_K = 200  # larger k would make candidate sets large; such requests use float32
TILE_BYTES = 1 << 20  # int32 scores of one tile of pass 1 (about one L2 cache)
INT8_MIN_SPEEDUP = 2.0  # int8 products at least this many times faster, or float32
_PROBE_SHAPE = (2048, 68, 64)  # items x width x users: one pass-1 tile at 64 dims
_PROBE_ROUNDS = 3
_INT32_MIN = torch.iinfo(torch.int32).min
_INT32_MAX = torch.iinfo(torch.int32).max

_buffers = threading.local()


def _buffer(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """This thread's scratch tensor ``name`` viewed as ``shape``: large
    temporaries are reused, so no request pays the page faults of fresh memory."""
    cells = int(np.prod(shape))
    buffer: Tensor | None = getattr(_buffers, name, None)
    if buffer is None or buffer.numel() < cells or buffer.dtype != dtype:
        buffer = torch.empty(cells, dtype=dtype)
        setattr(_buffers, name, buffer)
    return buffer[:cells].view(shape)


def _group_max(scores: Tensor, out: Tensor) -> None:
    """``out`` (T / GROUP, B) = the largest of each GROUP consecutive rows of
    ``scores`` (T, B). Two pairwise maxima for narrow batches, where a reduction
    over the middle axis is slow; ``amax`` otherwise."""
    rows = scores.view(-1, GROUP, scores.shape[1])  # (T / GROUP, GROUP, B)
    if scores.shape[1] >= 128:
        torch.amax(rows, dim=1, out=out)
        return
    torch.maximum(rows[:, 0], rows[:, 1], out=out)
    for g in range(2, GROUP):
        torch.maximum(out, rows[:, g], out=out)


@functools.cache
def int8_speedup() -> float:
    """How many times faster this CPU multiplies in int8 (``torch._int_mm``, pass
    1's product) than in float32 (``torch.mm``), at the shape of one pass-1 tile
    and on the calling thread's torch threads: the best of a few rounds of each,
    so a busy moment does not decide. Measured once per process (tens of
    milliseconds)."""
    items, width, users = _PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(-127, 128, (items, width), dtype=torch.int8, generator=generator)
    codes_t = torch.randint(-127, 128, (width, users), dtype=torch.int8, generator=generator)
    table, table_t = codes.float(), codes_t.float()
    int_out = torch.empty(items, users, dtype=torch.int32)
    float_out = torch.empty(items, users)

    def best(product: Callable[[], object]) -> float:
        product()  # first call: kernel selection, page faults
        times = []
        for _ in range(_PROBE_ROUNDS):
            started = time.perf_counter()
            product()
            times.append(time.perf_counter() - started)
        return min(times)

    with torch.inference_mode():
        int8 = best(lambda: torch._int_mm(codes, codes_t, out=int_out))
        float32 = best(lambda: torch.mm(table, table_t, out=float_out))
    return float32 / max(int8, 1e-9)


@dataclass(frozen=True, eq=False)
class QuantizedItems:
    """One version's item table [embedding, bias / beta] in int8 codes, with
    the constants of the error bound (see the module doc) per block."""

    codes: Tensor  # (n_padded, width) int8: rows of padding are zero
    scale: float  # sy
    beta: float  # the bias column is b / beta, so the user's bias weight is beta
    block_err: Tensor  # (n_blocks,) E over each block's items
    block_norm: Tensor  # (n_blocks,) N over each block's items
    n_items: int  # real items; rows from here on are padding
    block: int  # items per block (SCORE_BLOCK)

    @property
    def width(self) -> int:
        return int(self.codes.shape[1])

    @classmethod
    def build(cls, emb_padded: Tensor, bias_padded: Tensor, n_items: int,
              block: int) -> QuantizedItems:
        """Codes for ``emb_padded`` (n_padded, d) with ``bias_padded`` (n_padded,)
        as a last column scaled to the embeddings' range; the width is d + 1
        rounded up to a multiple of 4."""
        n_padded, dim = emb_padded.shape
        if n_padded % block or block % GROUP or n_padded == 0:
            raise ValueError(f"{n_padded} items in blocks of {block}, groups of {GROUP}")
        width = -(-(dim + 1) // 4) * 4
        emb_peak = float(emb_padded.abs().max())
        bias_peak = float(bias_padded[:n_items].abs().max()) if n_items else 0.0
        beta = bias_peak / emb_peak if emb_peak > 0 and bias_peak > 0 else 1.0
        table = torch.zeros(n_padded, width)  # (n_padded, width)
        table[:, :dim] = emb_padded
        table[:n_items, dim] = bias_padded[:n_items] / beta
        peak = float(table.abs().max())
        scale = peak / 127.0 if peak > 0 else 1.0
        codes = torch.round(table / scale).clamp_(-127, 127)  # (n_padded, width)
        decoded = codes * scale
        err = (table - decoded).norm(dim=1)  # (n_padded,)
        norm = decoded.norm(dim=1)  # (n_padded,)
        return cls(
            codes=codes.to(torch.int8).contiguous(), scale=scale, beta=beta,
            block_err=err.view(-1, block).amax(dim=1), block_norm=norm.view(-1, block).amax(dim=1),
            n_items=n_items, block=block)

    def quantize_users(self, user_emb: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Users (B, d) as x = [u, beta] ~ sx qx: the codes transposed (width, B)
        int8, one int8 step of score sx sy (B,), |x| (B,) and |x - sx qx| (B,)."""
        n_users, dim = user_emb.shape
        x = torch.zeros(n_users, self.width)  # (B, width)
        x[:, :dim] = user_emb
        x[:, dim] = self.beta
        user_scale = x.abs().amax(dim=1) / 127.0  # (B,) > 0: x holds beta > 0
        codes = torch.round(x / user_scale[:, None])  # (B, width)
        x_err = (x - codes * user_scale[:, None]).norm(dim=1)  # (B,)
        return (codes.to(torch.int8).T.contiguous(), user_scale * self.scale, x.norm(dim=1),
                x_err)

    @torch.inference_mode()
    def search(
        self,
        user_emb: Tensor,
        k: int,
        emb_padded: Tensor,
        bias_padded: Tensor,
        seen_rows: np.ndarray,
        seen_cols: np.ndarray,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Exact top ``k`` for each row of ``user_emb`` (B, d), leaving out the
        (row, item) pairs given as ``seen_rows``/``seen_cols``.

        Returns (values (B, k) descending, items (B, k), answered (B,) bool);
        rows not answered (fewer than k clean blocks) hold nothing useful."""
        n_users = user_emb.shape[0]
        n_padded = self.codes.shape[0]
        n_blocks = n_padded // self.block
        per_block = self.block // GROUP
        answered = torch.zeros(n_users, dtype=torch.bool)
        empty = (torch.full((n_users, max(k, 0)), -torch.inf),
                 torch.zeros(n_users, max(k, 0), dtype=torch.long), answered)
        if n_blocks < k or k <= 0:
            return empty

        codes_t, unit, x_norm, x_err = self.quantize_users(user_emb)

        group_max = self._group_maxima(codes_t)  # (G, B) pass 1

        # blocks: tau = k-th largest lower bound over clean blocks, then the
        # blocks whose upper bound reaches it (user-major from here on)
        lower, upper, eps = self._block_bounds(group_max, unit, x_norm, x_err)  # (B, nb) each
        if len(seen_rows):
            lower[torch.from_numpy(seen_rows), torch.from_numpy(seen_cols // self.block)] = \
                -torch.inf
        if self.n_items < n_padded:
            lower[:, self.n_items // self.block :] = -torch.inf
        tau = torch.topk(lower, k, dim=1, sorted=True).values[:, k - 1]  # (B,)
        answered = tau > -torch.inf
        tau.masked_fill_(~answered, torch.inf)  # no candidates for users not answered
        rows, blocks = (upper >= tau[:, None]).nonzero(as_tuple=True)  # (P,), sorted by row

        # the groups of those blocks whose upper bound (with the block's eps) reaches tau
        within = group_max.view(n_blocks, per_block, n_users)[blocks, :, rows].float()  # (P, pb)
        within *= unit[rows, None]
        within += eps[rows, blocks][:, None]
        pick, offset = (within >= tau[rows, None]).nonzero(as_tuple=True)  # row order kept
        if len(pick) == 0:
            return empty
        rows, groups = rows[pick], blocks[pick] * per_block + offset
        values, items = self._rescore(user_emb, k, emb_padded, bias_padded, rows, groups,
                                      seen_rows, seen_cols)
        return values, items, answered

    def _group_maxima(self, codes_t: Tensor) -> Tensor:
        """Pass 1: the largest int8 score of every group of items for every user,
        (G, B), computed tile by tile into this thread's buffers."""
        n_users, n_padded = codes_t.shape[1], self.codes.shape[0]
        group_max = _buffer("group_max", (n_padded // GROUP, n_users), torch.int32)  # (G, B)
        tile = max(self.block, TILE_BYTES // (4 * n_users) // self.block * self.block)
        scores = _buffer("tile", (tile, n_users), torch.int32)  # (T, B)
        for start in range(0, n_padded, tile):
            stop = min(start + tile, n_padded)
            part = scores[: stop - start]
            torch._int_mm(self.codes[start:stop], codes_t, out=part)
            _group_max(part, group_max[start // GROUP : stop // GROUP])
        return group_max

    def _block_bounds(
        self, group_max: Tensor, unit: Tensor, x_norm: Tensor, x_err: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Each block's float32 best score bounded from below and above (B, nb), and the
        half-width of that interval, eps (B, nb)."""
        n_users = group_max.shape[1]
        n_blocks, per_block = self.codes.shape[0] // self.block, self.block // GROUP
        block_max = group_max.view(n_blocks, per_block, n_users).amax(dim=1).T.float()  # (B, nb)
        block_max *= unit[:, None]
        eps = torch.outer(x_norm, self.block_err).addr_(x_err, self.block_norm)  # (B, nb)
        # float32 rescoring (a sum of ``width`` products) is off by less than
        # width * 2^-24 |x| |y|; four times that, and 1e-4 of the bound, cover rounding here
        rounding = self.width * 2.0**-22
        eps.mul_(1 + 1e-4).addr_(x_norm, self.block_norm + self.block_err, alpha=rounding)
        lower = block_max - eps
        return lower, block_max.add_(eps), eps

    def _rescore(self, user_emb: Tensor, k: int, emb_padded: Tensor, bias_padded: Tensor,
                 rows: Tensor, groups: Tensor, seen_rows: np.ndarray,
                 seen_cols: np.ndarray) -> tuple[Tensor, Tensor]:
        """Float32 scores of the candidate groups (``rows`` sorted), seen pairs
        out, then the top k per user."""
        n_users, dim = user_emb.shape
        n_padded = self.codes.shape[0]
        counts = torch.bincount(rows, minlength=n_users)  # (B,)
        width = int(counts.max())
        slot = torch.arange(len(rows)) - (torch.cumsum(counts, 0) - counts)[rows]
        cand = torch.zeros(n_users, width, dtype=torch.long)  # (B, C) group ids
        cand[rows, slot] = groups
        valid = torch.zeros(n_users, width, dtype=torch.bool)  # (B, C)
        valid[rows, slot] = True
        items = (cand[:, :, None] * GROUP + torch.arange(GROUP)).view(n_users, -1)  # (B, C*GROUP)
        flat = items.view(-1)
        gathered = _buffer("gathered", (len(flat), dim), torch.float32)
        torch.index_select(emb_padded, 0, flat, out=gathered)
        # (B, 1, d) x (B, d, C * GROUP): several times faster than the (B, C * GROUP, d)
        # x (B, d, 1) way round for these shapes
        exact = torch.bmm(user_emb[:, None, :], gathered.view(n_users, -1, dim).transpose(1, 2))
        exact = exact.view(n_users, -1)  # (B, C * GROUP)
        exact += bias_padded[flat].view(n_users, -1)  # padding items: -inf
        exact.masked_fill_(~valid.repeat_interleave(GROUP, dim=1), -torch.inf)
        if len(seen_rows):  # candidates whose (row, item) key is a seen pair's
            keys = (torch.arange(n_users)[:, None] * n_padded + items).view(-1)
            seen_keys = torch.from_numpy(np.unique(seen_rows * n_padded + seen_cols))
            at = torch.searchsorted(seen_keys, keys).clamp_(max=len(seen_keys) - 1)
            exact.view(-1).masked_fill_(seen_keys[at] == keys, -torch.inf)
        top = torch.topk(exact, min(k, exact.shape[1]), dim=1, sorted=True)
        return top.values, items.gather(1, top.indices)
