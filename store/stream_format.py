"""The interaction stream's entry format: a batch of rows, or a period cut."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from store.dto import Cut, NewInteraction


def encode_rows(rows: Sequence[NewInteraction]) -> bytes:
    """[[user_id, item_id, ts, event_id], ...]: each row is a named tuple of those."""
    return orjson.dumps([tuple(row) for row in rows])


def decode_rows(payload: str | bytes) -> list[NewInteraction]:
    return [NewInteraction(str(u), str(i), float(t), e) for u, i, t, e in orjson.loads(payload)]


def encode_cut(cut: Cut) -> bytes:
    return orjson.dumps({"job": cut.job_id, "period": cut.period_id})


def decode_cut(payload: str | bytes) -> Cut:
    value = orjson.loads(payload)
    period = value.get("period")
    return Cut(job_id=value.get("job"), period_id=int(period) if period is not None else None)
