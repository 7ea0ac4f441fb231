"""The ceiling benchmark: a synthetic log's best rankings on the replay's own periods."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import ceiling
from sml import hyperparameters as hp
from sml.replay import pretrain, run_method


def test_a_synthetic_logs_ceilings_are_printed_and_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ceiling.json"
    assert ceiling.main(["--dataset", "synthetic", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert table.count("| validation |") == 4 and table.count("| test |") == 4
    figures = json.loads(out.read_text())
    test = figures["ceilings"]["test"]
    assert test["period"]["recall"] >= test["previous"]["recall"] > test["popularity"]["recall"]
    assert 0 < test["previous"]["returning_share"] <= 1


def test_a_log_without_a_truth_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str]
) -> None:
    assert ceiling.main(["--dataset", "ml-100k"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no synthetic profile" in err
    # a profile that repeats earlier pairs has a generator, but its truth gives only the
    # chance of each new pair
    assert ceiling.main(["--dataset", "synthetic-repeat"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "repeats earlier pairs" in err


def test_a_methods_models_are_scored_in_parts_the_whole_as_the_replay_scores_it() -> None:
    truth, data = ceiling.prepare(ceiling.parse_args(["--dataset", "synthetic"]))
    figures = ceiling.measure_methods(truth, data, ["fine_tune", "popularity"], dim=8, seed=3)
    assert set(figures) == {"fine_tune", "popularity"}
    assert all(set(parts) == set(ceiling.PARTS) for parts in figures.values())
    # the whole model is the replay's own test figure for the same walk
    run = run_method("fine_tune", data, pretrain(data, 8, 3), hyper=hp.for_method("fine_tune"),
                     dim=8, seed=3)
    assert figures["fine_tune"]["whole model"] == pytest.approx(
        run.summary(data.roles.test)["recall@20"])
    # popularity has no user-item part; its biases are the whole of it
    assert figures["popularity"]["whole model"] == figures["popularity"]["item biases"]
    assert figures["popularity"]["biases + true interests (previous)"] > figures[
        "popularity"]["item biases"]
