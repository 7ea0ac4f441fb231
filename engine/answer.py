"""One user's answer as the engine returns it and the API renders it."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True)
class Recommendation:
    """One user's answer. Items are indices into an id table (``names``, and
    ``prefixes``: each item's entry in a body up to its score, where the model
    has them), looked up only when rendered."""

    user_id: str
    items: list[int]
    scores: list[float]
    names: list[str]
    model_version: int | None
    fallback: str | None
    prefixes: list[bytes] | None = None

    @property
    def item_ids(self) -> list[str]:
        return list(map(self.names.__getitem__, self.items))

    def render(self) -> bytes:
        """:meth:`to_json` as compact JSON bytes. With the model's item prefixes,
        no object is made per item: the scores are written as one JSON array (the
        shortest repr of each, as ``json`` writes them) and cut at its commas."""
        if self.prefixes is None:
            return orjson.dumps(self.to_json())
        entries = b""
        if self.items:
            scores = orjson.dumps(self.scores)[1:-1].split(b",")
            entries = b"},".join(map(operator.add, map(self.prefixes.__getitem__, self.items),
                                     scores)) + b"}"
        version = b"null" if self.model_version is None else b"%d" % self.model_version
        fallback = b"null" if self.fallback is None else orjson.dumps(self.fallback)
        return (b'{"user_id":' + orjson.dumps(self.user_id) + b',"items":[' + entries
                + b'],"model_version":' + version + b',"fallback":' + fallback + b"}")

    def to_json(self) -> dict[str, Any]:
        """The API body (see ``schemas.Recommendations``)."""
        return {
            "user_id": self.user_id,
            "items": [{"item_id": i, "score": s} for i, s in zip(self.item_ids, self.scores,
                                                                  strict=True)],
            "model_version": self.model_version,
            "fallback": self.fallback,
        }
