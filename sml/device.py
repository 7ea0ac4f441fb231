"""Where the models train: ``--device`` / ``SMLREC_DEVICE`` (``auto``, ``cpu``, ``cuda``).

The MF tables, the transfer and every step's batches live on the device while a
boundary trains; what a boundary returns, what a strategy keeps between
boundaries and every checkpoint it writes stay on the CPU, so serving and the
artifacts are the same whichever device trained them. Negatives are drawn on the
CPU (the same draws on every device, so a GPU run trains on the very batches a
CPU run does) and moved with their batch.
"""

from __future__ import annotations

import os

import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve(name: str) -> str:
    """``auto`` is ``cuda`` where a CUDA device is available, else ``cpu``; ``cuda``
    without one is an error that says so."""
    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    available = torch.cuda.is_available()
    if name == "cuda" and not available:
        raise ValueError("device cuda: no CUDA device is available to PyTorch here")
    if name == "auto":
        name = "cuda" if available else "cpu"
    if name == "cuda":
        # deterministic cuBLAS (torch.use_deterministic_algorithms asks for it); must be
        # set before the first CUDA call
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return name


def to_cpu(value: object) -> object:
    """``value`` with every tensor in it (nested dicts, lists, tuples) copied to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value
