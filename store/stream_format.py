"""The interaction stream's entry format: a batch of rows, or a period cut.

A row is ``[user_id, item_id, ts, event_id]``, followed by ``type`` and
``weight`` when either differs from its default (a view of weight 1): rows of
plain views stay as short as they were, and entries written before rows had a
type and a weight read back as such views.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from store.dto import DEFAULT_TYPE, Cut, NewInteraction


def encode_rows(rows: Sequence[NewInteraction]) -> bytes:
    """The rows as a JSON array of arrays."""
    return orjson.dumps([row[:4] if row.type == DEFAULT_TYPE and row.weight == 1
                         else tuple(row) for row in rows])


def decode_rows(payload: str | bytes) -> list[NewInteraction]:
    return [_row(*fields) for fields in orjson.loads(payload)]


def _row(user_id: object, item_id: object, ts: float, event_id: str | None,
         kind: object = DEFAULT_TYPE, weight: float = 1.0) -> NewInteraction:
    return NewInteraction(str(user_id), str(item_id), float(ts), event_id, str(kind),
                          float(weight))


def encode_cut(cut: Cut) -> bytes:
    return orjson.dumps({"job": cut.job_id, "period": cut.period_id})


def decode_cut(payload: str | bytes) -> Cut:
    value = orjson.loads(payload)
    period = value.get("period")
    return Cut(job_id=value.get("job"), period_id=int(period) if period is not None else None)
