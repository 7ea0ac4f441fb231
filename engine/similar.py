"""Items like a given one, from the served model's item vectors: the cosine of their
embeddings (the bias is left out: it says how popular an item is, not what it is
like), exact over the whole catalogue, the item itself and the hidden items excluded."""

from __future__ import annotations

import threading
import weakref

import numpy as np
import torch

from engine.holder import ServingModel
from engine.scorer import TopK

_inverse_norms: weakref.WeakKeyDictionary[ServingModel, torch.Tensor] = (
    weakref.WeakKeyDictionary())
_lock = threading.Lock()
EPS = 1e-12  # an all-zero vector is like nothing: its cosine is 0


def _inverse_norm(model: ServingModel) -> torch.Tensor:
    """1 / ||v_i|| for every item of ``model`` (n_items,), computed once per version
    and dropped with it."""
    with _lock:
        cached = _inverse_norms.get(model)
    if cached is None:
        cached = model.item_emb.norm(dim=1).clamp_min(EPS).reciprocal()  # (n_items,)
        with _lock:
            _inverse_norms[model] = cached
    return cached


def similar_items(model: ServingModel, item: int, k: int,
                  hidden: np.ndarray | None = None) -> TopK:
    """The ``k`` items of ``model`` most like item index ``item``, by cosine
    descending (fewer when the catalogue is smaller), the ``hidden`` items left out."""
    if not 0 <= item < model.n_items:
        raise IndexError(f"item index {item} outside the model's {model.n_items} items")
    k = min(k, model.n_items - 1)
    if k <= 0:
        return TopK(np.empty(0, np.int64), np.empty(0, np.float32))
    inverse = _inverse_norm(model)
    with torch.inference_mode():
        query = model.item_emb[item] * inverse[item]  # (d,) unit length (or zero)
        scores = torch.mv(model.item_emb, query) * inverse  # (n_items,)
        scores[item] = -torch.inf
        if hidden is not None and len(hidden):
            scores[torch.from_numpy(hidden)] = -torch.inf
        top = torch.topk(scores, k, sorted=True)
    values, indices = top.values.numpy(), top.indices.numpy()
    finite = np.isfinite(values)
    return TopK(indices[finite], values[finite])
