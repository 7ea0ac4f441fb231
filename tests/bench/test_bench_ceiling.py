"""The ceiling benchmark: a synthetic log's best rankings on the replay's own periods."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import ceiling


def test_a_synthetic_logs_ceilings_are_printed_and_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ceiling.json"
    assert ceiling.main(["--dataset", "synthetic", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert table.count("| validation |") == 4 and table.count("| test |") == 4
    figures = json.loads(out.read_text())
    test = figures["test"]
    assert test["period"]["recall"] >= test["previous"]["recall"] > test["popularity"]["recall"]
    assert 0 < test["previous"]["returning_share"] <= 1


def test_a_log_without_a_truth_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str]
) -> None:
    assert ceiling.main(["--dataset", "ml-100k"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no synthetic profile" in err
