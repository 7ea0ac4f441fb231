"""Where models train (``sml.device``, ``--device``, ``SMLREC_DEVICE``): the choice and
its errors on any machine; on a machine with a CUDA GPU, that training there gives
CPU results close to the CPU's and CPU-side state (``python -m bench.gpu_check``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sml import hyperparameters as hp
from sml.data import split_equal_count
from sml.device import resolve, to_cpu
from sml.fit import FitConfig, SeenPairs, fit_mf
from sml.model import MFConfig, MFWeights
from sml.registry import from_hyper
from sml.replay import main
from sml.strategy import Strategy
from sml.synthetic import SyntheticConfig, synthetic_drift
from smlrec.settings import Settings

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device here")
without_cuda = pytest.mark.skipif(HAS_CUDA, reason="a CUDA device is here")


def test_cpu_and_auto_resolve_and_unknown_names_are_refused() -> None:
    assert resolve("cpu") == "cpu"
    assert resolve("auto") == ("cuda" if HAS_CUDA else "cpu")
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda"):
        resolve("gpu")


@without_cuda
def test_cuda_without_a_gpu_is_refused_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The resolver, the worker's settings (start-up fails) and the replay (one line,
    exit 2, nothing written) each say that there is no CUDA device."""
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve("cuda")
    with pytest.raises(ValueError, match="SMLREC_DEVICE: device cuda: no CUDA device"):
        Settings(device="cuda")
    assert Settings(device="auto").device == "auto"
    code = main(["--dataset", "synthetic", "--methods", "fine_tune", "--device", "cuda",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and "--device: device cuda: no CUDA device" in err[0]
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_hyper_file_cannot_choose_the_device() -> None:
    with pytest.raises(ValueError, match="device is not a hyper-parameter"):
        hp.fit_config({"epochs": 1, "device": "cuda"})


def test_state_for_a_checkpoint_is_a_cpu_copy() -> None:
    """What a checkpoint stores is copied, never a view of a live training tensor."""
    live = {"theta": torch.ones(3), "state": {0: {"exp_avg": torch.zeros(2)}}, "step": [1]}
    saved = to_cpu(live)
    live["theta"].add_(1.0)
    live["state"][0]["exp_avg"].add_(1.0)  # type: ignore[index]
    assert torch.equal(saved["theta"], torch.ones(3))  # type: ignore[index]
    assert torch.equal(saved["state"][0]["exp_avg"], torch.zeros(2))  # type: ignore[index]
    assert saved["step"] == [1]  # type: ignore[index]


# -- on a GPU ------------------------------------------------------------------------


def _periods() -> list:  # type: ignore[type-arg]
    log = synthetic_drift(SyntheticConfig(n_periods=4, interactions_per_period=600, seed=2))
    return split_equal_count(log, n_periods=4)


def _walk(name: str, device: str, hyper: hp.Hyper) -> tuple[Strategy, MFWeights]:
    periods = _periods()
    strategy = from_hyper(name, hyper, dim=8, seed=0, device=device)
    base = MFWeights.init(MFConfig(dim=8), periods[0].n_users, periods[0].n_items,
                          torch.Generator().manual_seed(0))
    strategy.warm_start(base, periods[:1])
    model = base
    for period in periods[1:]:
        model = strategy.boundary(period)
    return strategy, model


def _tensors(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


# each runs on the CPU too (against itself), so the checks a GPU runs are run here
DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=needs_cuda)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rows_only", [False, True])
def test_a_fit_on_the_device_matches_the_cpu_and_returns_cpu_tables(
    device: str, rows_only: bool
) -> None:
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 50, 2_000), rng.integers(0, 80, 2_000)
    seen = SeenPairs()
    seen.add(users, items)
    start = MFWeights.init(MFConfig(dim=8), 50, 80, torch.Generator().manual_seed(1))
    config = FitConfig(epochs=3, lr=0.01, n_negatives=2, batch_size=256, rows_only=rows_only)
    fits = [fit_mf(start, users, items, seen=seen, config=replace(config, device=where),
                   rng=np.random.default_rng(5)) for where in ("cpu", device)]
    assert fits[1].user.device.type == "cpu" and fits[1].item.device.type == "cpu"
    torch.testing.assert_close(fits[1].user, fits[0].user, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(fits[1].item, fits[0].item, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["sml", "sml_st", "full_retrain", "spmf"])
def test_a_strategy_on_the_device_serves_and_saves_cpu_tensors_close_to_the_cpus(
    device: str, name: str
) -> None:
    """Three boundaries (SML: meta steps included, Theta learning at 1e-3) on the CPU
    and on the device: the served model is on the CPU and close to the CPU run's (the
    negatives are the same draws), and every tensor of the checkpoint state is on the
    CPU; that state resumes on the device."""
    hyper = hp.for_method(name)
    if name.startswith("sml"):
        hyper["meta"] = {**hyper["meta"], "lr": 1e-3}
    _, on_cpu = _walk(name, "cpu", hyper)
    strategy, on_gpu = _walk(name, device, hyper)
    assert on_gpu.user.device.type == "cpu"
    torch.testing.assert_close(on_gpu.user, on_cpu.user, rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(on_gpu.item, on_cpu.item, rtol=1e-2, atol=1e-3)
    state = strategy.state_dict()
    assert {t.device.type for t in _tensors(state)} == {"cpu"}
    resumed = from_hyper(name, hyper, dim=8, seed=0, device=device)
    resumed.load_state_dict(state)
    model = resumed.boundary(_periods()[-1])
    assert model.user.device.type == "cpu" and torch.isfinite(model.user).all()
