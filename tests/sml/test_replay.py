"""A tiny replay on the synthetic drift data, through the real command line."""

import json

import pytest

from sml.metrics import METRIC_KEYS
from sml.replay import main


@pytest.mark.slow
def test_replay_on_synthetic(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(
        "sml.hyperparameters.PRETRAIN",
        {"epochs": 3, "lr": 0.01, "l2": 1e-4, "n_negatives": 1, "batch_size": 1024},
    )
    hyper = tmp_path / "hyper.json"
    quick = {"fit": {"epochs": 2}, "meta": {"epochs": 1}}
    hyper.write_text(
        json.dumps(
            {m: quick for m in ("sml", "sml_n", "sml_fp")}
            | {m: {"fit": {"epochs": 2}} for m in ("fine_tune", "spmf", "full_retrain")}
        )
    )
    out = tmp_path / "run"
    methods = "sml,full_retrain,fine_tune,spmf,sml_s,sml_n,sml_fp,popularity"
    args = [
        "--dataset",
        "synthetic",
        "--methods",
        methods,
        "--out",
        str(out),
        "--dim",
        "8",
        "--hyper",
        str(hyper),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Table 1" in printed and "Table 2" in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == set(methods.split(","))
    sml = results["methods"]["sml"]
    assert set(sml["test"]) >= set(METRIC_KEYS)
    assert 0.0 <= sml["test"]["recall@20"] <= 1.0
    assert sml["transfer_init"] == "fine_tune"
    assert 0.0 < sml["test_returning"]["share"] < 1.0
    assert [p["period"] for p in sml["periods"]] == list(range(3, 8))
    assert (out / "recall_per_period.png").stat().st_size > 1000
    # the same seed gives the same numbers
    again = tmp_path / "again"
    assert main(["--dataset", "synthetic", "--methods", "sml", "--out", str(again), *args[6:]]) == 0
    assert json.loads((again / "results.json").read_text())["methods"]["sml"]["test"] == sml["test"]
