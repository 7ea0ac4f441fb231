"""The replay through its real command line: any log, its flags, its reports and its errors."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sml import hyperparameters as hp
from sml import replay
from sml.metrics import METRIC_KEYS
from sml.options import Roles
from sml.replay import main, pretrain, run_method
from sml.replay_data import ReplayData
from sml.synthetic import SyntheticConfig, synthetic_drift

QUICK = {"fit": {"epochs": 1}}
QUICK_SML = {"fit": {"epochs": 1}, "meta": {"epochs": 1}, "offline_passes": 1}
PER_METHOD_KEYS = {
    "hyperparameters",
    "validation",
    "test",
    "test_returning",
    "test_first_seen",
    "periods",
    "test_train_seconds",
    "test_train_cpu_seconds",
    "offline_extra_seconds",
}


@pytest.fixture(autouse=True)
def quick_pretraining(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "sml.hyperparameters.PRETRAIN",
        {"epochs": 2, "lr": 0.01, "l2": 1e-4, "n_negatives": 1, "batch_size": 1024},
    )


@dataclass(frozen=True)
class Files:
    csv: Path  # plays.csv: userId, movieId, timestamp
    dat: Path  # ratings.dat: the same rows, and some of them repeated
    hyper: Path  # one-epoch training for every method
    repeats: int  # rows of ratings.dat that repeat a (user, item) pair


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    """A small drifting log (6 days, 250 interactions a day) in two formats."""
    folder = tmp_path_factory.mktemp("replay")
    log = synthetic_drift(
        SyntheticConfig(
            n_periods=6,
            interactions_per_period=250,
            n_users_initial=30,
            n_items_initial=150,
            new_users_per_period=8,
            new_items_per_period=10,
            seed=1,
        )
    )
    rows = [
        (log.user_ids[u], log.item_ids[i], int(t))
        for u, i, t in zip(log.users, log.items, log.timestamps, strict=True)
    ]
    with open(folder / "plays.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["userId", "movieId", "timestamp"])
        writer.writerows(rows)
    repeats = [(u, i, t + 1) for u, i, t in rows[::10]]  # played again a second later
    lines = [f"{u}::{i}::5::{t}\n" for u, i, t in rows + repeats]
    (folder / "ratings.dat").write_text("".join(lines))
    hyper = {m: QUICK for m in ("fine_tune", "spmf", "full_retrain")} | {"sml": QUICK_SML}
    (folder / "hyper.json").write_text(json.dumps(hyper))
    return Files(folder / "plays.csv", folder / "ratings.dat", folder / "hyper.json", len(repeats))


def _replay(
    files: Files, out: Path, *flags: str, methods: str = "fine_tune,popularity"
) -> list[str]:
    return [
        "--dataset",
        str(files.csv),
        "--columns",
        "user=userId,item=movieId",
        "--methods",
        methods,
        "--dim",
        "8",
        "--hyper",
        str(files.hyper),
        "--out",
        str(out),
        *flags,
    ]


def _results(out: Path) -> dict[str, Any]:
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    return results


# ---------------------------------------------------------------- roles


def test_roles_from_counts_and_scaled() -> None:
    assert Roles.from_counts(5, 9, 2, 4) == Roles()
    assert Roles.scaled(20) == Roles()
    small = Roles.from_counts(2, 3, 1, 2)
    assert small.n_periods == 8 and small.offline == (2, 3, 4) and small.test == (6, 7)
    for n in (4, 5, 6, 7, 9, 13, 50):
        roles = Roles.scaled(n)
        assert roles.n_periods == n and min(roles.counts) >= 1
    with pytest.raises(ValueError, match="at least 4"):
        Roles.scaled(3)
    with pytest.raises(ValueError, match="at least one period"):
        Roles.from_counts(2, 0, 1, 1)


# ---------------------------------------------------------------- flags


def test_several_seeds_report_both_slices_and_the_bootstrap(
    files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    methods = "sml,fine_tune,spmf,popularity"
    argv = _replay(files, out, "--roles", "2,2,1,1", "--seeds", "0,1", methods=methods)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    titles = ("Table 1:", "Table 1, returning users", "SML wins", "Paired bootstrap", "Table 2")
    assert all(title in printed for title in titles)
    results = _results(out)
    assert results["seeds"] == [0, 1] and results["protocol"]["n_periods"] == 6
    assert results["protocol"]["bootstrap"]["draws"] == 1000
    for name in methods.split(","):
        entry = results["methods"][name]
        assert set(entry) >= PER_METHOD_KEYS
        assert set(entry["test"]) >= set(METRIC_KEYS)
        assert 0 < entry["test_returning"]["share"] < 1
        seeds = entry["seeds"]
        assert set(seeds) == {"0", "1"}
        for key in METRIC_KEYS:  # the aggregate is the mean over seeds
            mean = np.mean([seeds[s]["test"][key] for s in seeds])
            assert entry["test"][key] == pytest.approx(mean)
            sd = np.std([seeds[s]["test"][key] for s in seeds], ddof=1)
            assert entry["test_sd"][key] == pytest.approx(sd)
    sml = results["methods"]["sml"]["seeds"]
    for name in ("fine_tune", "spmf", "popularity"):
        other = results["methods"][name]["seeds"]
        wins = results["methods"][name]["sml_wins"]
        for group, block in (("all", "test"), ("returning", "test_returning")):
            for key in ("recall@20", "ndcg@20"):
                expected = sum(sml[s][block][key] > other[s][block][key] for s in ("0", "1"))
                assert wins[group][key] == expected
        significance = results["significance"][f"vs_{name}"]
        for group in ("all", "returning"):
            for key in ("recall@20", "ndcg@20"):
                iv = significance[group][key]
                assert iv["low"] <= iv["diff"] <= iv["high"]
        # the bootstrap's difference is that of the seed-averaged figures
        diff = results["methods"]["sml"]["test"]["recall@20"] - results["methods"][name]["test"][
            "recall@20"
        ]
        assert significance["all"]["recall@20"]["diff"] == pytest.approx(diff)
    assert "vs_sml" not in results["significance"]


def test_without_sml_there_is_no_bootstrap(
    files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(_replay(files, out, "--periods", "6", "--seed", "3", "--negatives", "50")) == 0
    printed = capsys.readouterr().out
    assert "Table 1, returning users" in printed and "Paired bootstrap" not in printed
    results = _results(out)
    assert results["significance"] == {} and results["seeds"] == [3]
    assert results["protocol"]["sampled_negatives"] == 50
    assert [results["protocol"][r] for r in ("pretrain", "offline", "validation", "test")] == [
        [0, 1],
        [2, 3],
        [4],
        [5],
    ]
    assert "sml_wins" not in results["methods"]["fine_tune"]
    assert set(results["methods"]["fine_tune"]) >= PER_METHOD_KEYS


@pytest.mark.parametrize(("split", "n_periods"), [("time:1d", 6), ("time:12h", 12)])
def test_time_split(files: Files, tmp_path: Path, split: str, n_periods: int) -> None:
    out = tmp_path / "run"
    assert main(_replay(files, out, "--split", split, methods="popularity")) == 0
    protocol = _results(out)["protocol"]
    assert protocol["split"] == split and protocol["n_periods"] == n_periods
    assert sum(protocol["period_sizes"]) == 1500
    assert protocol["test"][-1] == n_periods - 1


def test_ratings_dat_with_dedupe(
    files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repeats = files.repeats
    out = tmp_path / "run"
    argv = ["--dataset", str(files.dat), "--methods", "popularity", "--out", str(out)]
    assert main([*argv, "--dedupe", "--periods", "6"]) == 0
    assert f"--dedupe dropped {repeats} repeated" in capsys.readouterr().out
    dataset = _results(out)["dataset"]
    assert dataset["duplicates_dropped"] == repeats and dataset["interactions"] == 1500
    assert main([*argv, "--periods", "6"]) == 0
    dataset = _results(out)["dataset"]
    assert dataset["duplicates_dropped"] is None and dataset["interactions"] == 1500 + repeats


# ---------------------------------------------------------------- errors


ERRORS = [
    (["--dataset", "{tmp}/nowhere.csv"], "nowhere.csv: no such file"),
    (["--dataset", "{tmp}/bad.dat"], "bad.dat, line 2: 3 fields separated by '::'"),
    (["--dataset", "{csv}"], "plays.csv, line 1: no column 'user_id'"),
    (["--methods", "sml,bogus"], "argument --methods: unknown methods bogus"),
    (["--roles", "5,9,2"], "argument --roles: '5,9,2' has 3 counts"),
    (["--roles", "2,0,2,2"], "every role needs at least one period"),
    (["--periods", "3"], "a replay needs at least 4"),
    (["--periods", "two"], "argument --periods: 'two' is not a whole number"),
    (["--periods", "8", "--roles", "2,2,1,1"], "--roles 2,2,1,1 makes 6 periods, --periods asks"),
    (["--periods", "2000"], "has 1,500 interactions, too few for 2000 periods"),
    (["--split", "weekly"], "argument --split: 'weekly' is not count, daily or time"),
    (["--split", "time:1d", "--roles", "5,9,2,4"], "--split time:1d made 6 periods"),
    (["--split", "daily", "--periods", "6"], "argument --periods: applies to --split count"),
    (["--negatives", "0"], "argument --negatives: '0' must be at least 1"),
    (["--negatives", "160"], "--negatives 160: user "),
    (["--seeds", "0,0"], "argument --seeds: '0,0' repeats a seed"),
    (["--seeds", "0,x"], "argument --seeds: '0,x' is not comma-separated seeds"),
    (["--seed", "1", "--seeds", "0,1"], "argument --seeds: not allowed with argument --seed"),
    (["--columns", "user=userId,who=x"], "argument --columns: 'who=x' is not user=NAME"),
    (["--dataset", "synthetic", "--columns", "user=a"], "synthetic is no .csv file"),
    (["--hyper", "{tmp}/hyper.json"], "--hyper {tmp}/hyper.json: fine_tune: unknown FitConfig"),
    (["--hyper", "{tmp}/nothere.json"], "--hyper {tmp}/nothere.json: No such file"),
    (["--hyper", "{tmp}/sml.json"], "sml.json: sml: step_one must be one of 'transfer', 'own'"),
    (["--out", "{csv}/inside"], "plays.csv/inside: Not a directory"),
    (["--score", "offline"], "argument --score: invalid choice: 'offline'"),
    (["--device", "gpu"], "argument --device: invalid choice: 'gpu'"),
]


@pytest.mark.parametrize(("flags", "expected"), ERRORS)
def test_bad_input_is_one_line_and_exit_2(
    files: Files,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    expected: str,
) -> None:
    (tmp_path / "bad.dat").write_text("1::2::5::100\n1::2::5\n")
    (tmp_path / "hyper.json").write_text(json.dumps({"fine_tune": {"fit": {"epoch": 1}}}))
    (tmp_path / "sml.json").write_text(json.dumps({"sml": {"step_one": "both"}}))
    fill = {"{tmp}": str(tmp_path), "{csv}": str(files.csv)}
    argv = ["--methods", "fine_tune", "--out", str(tmp_path / "run")]
    if "--dataset" not in flags:
        argv += ["--dataset", str(files.csv)]
        if "--columns" not in flags:
            argv += ["--columns", "user=userId,item=movieId"]
    argv += [_fill(flag, fill) for flag in flags]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("smlrec replay: error: ")
    assert _fill(expected, fill) in lines[0]
    assert "Traceback" not in captured.err and not (tmp_path / "run" / "results.json").exists()


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(key, value)
    return text


# ---------------------------------------------------------------- the protocol's walk


@pytest.mark.slow
def test_replay_on_synthetic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hyper = tmp_path / "hyper.json"
    quick = {
        "fit": {"epochs": 2},
        "meta": {"epochs": 1},
        "transfer": {"hidden": 32},
        "offline_passes": 1,
    }
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
    assert not math.isnan(results["significance"]["vs_fine_tune"]["all"]["recall@20"]["diff"])
    # the merge's own contribution, for every method that merges, and only for them
    assert "The transfer's own contribution" in printed
    for name in methods.split(","):
        merges = name.startswith("sml")
        assert ("transfer_contribution" in results["methods"][name]) == merges, name
    for group in ("all", "returning"):
        iv = sml["transfer_contribution"][group]["recall@20"]
        assert iv["low"] <= iv["diff"] <= iv["high"]
    assert (out / "recall_per_period.png").stat().st_size > 1000
    # the same seed gives the same numbers
    again = tmp_path / "again"
    assert main(["--dataset", "synthetic", "--methods", "sml", "--out", str(again), *args[6:]]) == 0
    assert json.loads((again / "results.json").read_text())["methods"]["sml"]["test"] == sml["test"]


def test_a_transfer_that_never_learns_contributes_exactly_nothing(
    files: Files, tmp_path: Path
) -> None:
    """Theta never updated: the fine-tune start returns W-hat itself, so the served model
    and the W-hat it was merged from score the same on every interaction."""
    hyper = tmp_path / "frozen.json"
    hyper.write_text(json.dumps({"sml": {**QUICK_SML, "meta": {"lr": 0.0, "check": False}}}))
    out = tmp_path / "run"
    argv = _replay(files, out, "--roles", "2,2,1,1", methods="sml,fine_tune")
    argv[argv.index("--hyper") + 1] = str(hyper)
    assert main(argv) == 0
    contribution = _results(out)["methods"]["sml"]["transfer_contribution"]
    for group in ("all", "returning"):
        for key in ("recall@20", "ndcg@20"):
            assert contribution[group][key]["diff"] == 0.0
            assert contribution[group][key]["low"] == contribution[group][key]["high"] == 0.0


# ---------------------------------------------------------------- Theta's step size


@pytest.fixture(scope="module")
def small_data() -> ReplayData:
    log = synthetic_drift(
        SyntheticConfig(
            n_periods=7,
            interactions_per_period=300,
            n_users_initial=30,
            n_items_initial=120,
            new_users_per_period=5,
            new_items_per_period=8,
            seed=3,
        )
    )
    return ReplayData.prepare(log, Roles.from_counts(2, 2, 2, 1), n_negatives=20)


def test_heldout_scores_validation_and_test_only(small_data: ReplayData) -> None:
    """With ``score="heldout"`` candidates exist from the first validation row on and a
    walk scores exactly the validation and test periods (a 3M-row log at 999 negatives
    would need 12 GB of candidates for every online period)."""
    roles = small_data.roles
    heldout = ReplayData.prepare(small_data.log, roles, periods=small_data.periods,
                                 n_negatives=20, score="heldout")
    first = small_data.periods[roles.validation[0]].start
    assert heldout.candidates.first_row == first
    assert small_data.candidates.first_row == 0  # "online": the protocol's draws, unchanged
    assert len(heldout.candidates.items) == len(small_data.log) - first
    base = pretrain(heldout, 8, 0)
    run = run_method("fine_tune", heldout, base, hyper=hp.for_method("fine_tune", {}), dim=8)
    assert sorted(run.evaluations) == [*roles.validation, *roles.test]
    assert sorted(run.cpu_seconds) == list(range(roles.first_online, roles.test[-1] + 1))
    online = run_method("fine_tune", small_data, pretrain(small_data, 8, 0),
                        hyper=hp.for_method("fine_tune", {}), dim=8)
    assert sorted(online.evaluations) == list(range(roles.first_online + 1, roles.test[-1] + 1))
    with pytest.raises(ValueError, match="score must be one of"):
        ReplayData.prepare(small_data.log, roles, periods=small_data.periods, score="all")


def test_the_step_two_rate_is_chosen_on_validation_and_that_walk_goes_on(
    small_data: ReplayData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each candidate walks to the last validation period, none scores a test period
    before the choice, the best validation Recall@20 wins, and the test figures are
    exactly those of a run given the chosen rate alone (the same walk, continued)."""
    roles = small_data.roles
    base = pretrain(small_data, 8, 0)
    # one step-1 window and fit, so the rates alone are chosen among
    hyper = {**QUICK_SML, "transfer": {"hidden": 16}, "meta": {"epochs": 1, "lr": 1e-2},
             "meta_lrs": [0.0, 3e-2, 1e-4], "step_one_windows": [1],
             "step_one_histories": [0.0]}
    hyper = hp.for_method("sml", {"sml": hyper})
    scored: list[int] = []
    evaluate = replay._evaluate

    def spy(model: Any, data: ReplayData, period: int) -> Any:
        scored.append(period)
        return evaluate(model, data, period)

    monkeypatch.setattr(replay, "_evaluate", spy)
    run = run_method("sml", small_data, base, hyper=hyper, dim=8, seed=0)
    test = roles.test[0]
    # each candidate scored W and W-hat on the validation periods; only the chosen one a test
    assert scored.count(roles.validation[-1]) == 3 * 2
    assert scored.count(test) == 2 and scored.index(test) > len(scored) - 3
    selection = run.selection
    assert [c["lr"] for c in selection["candidates"]] == [0.0, 3e-2, 1e-4]
    assert selection["periods"] == list(roles.validation)
    best = max(selection["candidates"], key=lambda c: (c["recall@20"], c["ndcg@20"]))
    assert selection["chosen_lr"] == best["lr"] == run.hyperparameters["meta"]["lr"]
    assert run.hyperparameters["meta_lrs"] == [best["lr"]]
    assert run.summary(roles.validation)["recall@20"] == best["recall@20"]
    # the candidates differ, so the choice is not a formality
    assert len({(c["recall@20"], c["ndcg@20"]) for c in selection["candidates"]}) > 1
    # and each one's distance from the chosen one is the difference of their validation
    # Recall@20 (pooled over the periods), with its bootstrap interval around it
    for c in selection["candidates"]:
        gap = c["recall@20_vs_chosen"]
        assert gap["diff"] == pytest.approx(c["recall@20"] - best["recall@20"], abs=1e-12)
        assert gap["low"] <= gap["diff"] <= gap["high"]
        if c is best:
            assert (gap["low"], gap["high"], gap["excludes_zero"]) == (0.0, 0.0, False)

    monkeypatch.setattr(replay, "_evaluate", evaluate)
    alone = run_method("sml", small_data, base, hyper=hp.with_theta_lr(hyper, best["lr"]),
                       dim=8, seed=0)
    assert not alone.selection
    assert alone.evaluations[test].mean() == run.evaluations[test].mean()


def test_with_several_seeds_the_rate_is_chosen_on_their_mean(small_data: ReplayData) -> None:
    """Every seed walks every candidate; the one with the best validation Recall@20 averaged
    over the seeds goes on, on every seed, and each seed's test figures are those of its
    own walk given that rate alone."""
    roles = small_data.roles
    hyper = {**QUICK_SML, "transfer": {"hidden": 16}, "meta": {"epochs": 1, "lr": 1e-2},
             "meta_lrs": [0.0, 3e-2, 1e-4], "step_one_windows": [1],
             "step_one_histories": [0.0]}
    runs = replay.run_seeds(small_data, ["sml"], [0, 1], dim=8,
                            overrides=hp.HyperFile(None, {"sml": hyper}))
    selections = [runs[seed]["sml"].selection for seed in (0, 1)]
    assert all(s["seeds"] == [0, 1] and "mean over seeds" in s["by"] for s in selections)
    lrs = [c["lr"] for c in selections[0]["candidates"]]
    mean = [np.mean([s["candidates"][i]["recall@20"] for s in selections]) for i in range(3)]
    ndcg = [np.mean([s["candidates"][i]["ndcg@20"] for s in selections]) for i in range(3)]
    # a tie on Recall@20 (walks that differ only in Theta fit the same W-hat from the same
    # draws, so a rate that moves Theta little ties rate 0) goes to NDCG@20, then the earlier
    chosen = max(range(3), key=lambda i: (mean[i], ndcg[i], -i))
    best = lrs[chosen]
    assert {s["chosen_lr"] for s in selections} == {best}
    # how far each candidate is from the chosen one is one figure for the log: each
    # interaction's value averaged over the seeds, the same on every seed's record
    gaps = [c["recall@20_vs_chosen"] for c in selections[0]["candidates"]]
    assert gaps == [c["recall@20_vs_chosen"] for c in selections[1]["candidates"]]
    for i, gap in enumerate(gaps):
        assert gap["diff"] == pytest.approx(mean[i] - mean[chosen], abs=1e-12)
    test = roles.test[0]
    for seed in (0, 1):
        alone = run_method("sml", small_data, pretrain(small_data, 8, seed),
                           hyper=hp.with_theta_lr(hp.for_method("sml", {"sml": hyper}), best),
                           dim=8, seed=seed)
        assert alone.evaluations[test].mean() == runs[seed]["sml"].evaluations[test].mean()


def test_a_given_step_two_rate_is_used_and_the_list_is_checked() -> None:
    assert hp.for_method("sml", {"sml": {"meta": {"lr": 3e-5}}})["meta_lrs"] == [3e-5]
    # a list of one value is the value used, as a value given is a list of one
    assert hp.for_method("sml", {"sml": {"meta_lrs": [3e-5]}})["meta"]["lr"] == 3e-5
    assert hp.theta_lrs("sml", hp.for_method("sml")) == hp.DEFAULTS["sml"]["meta_lrs"]
    assert hp.theta_lrs("sml_frozen", hp.for_method("sml_frozen")) == []  # nothing to learn
    assert hp.theta_lrs("fine_tune", hp.for_method("fine_tune")) == []
    for bad in ([], [-1e-3], ["1e-3"], 1e-3, [True], [float("nan")], [1e-4, 1e-4]):
        with pytest.raises(ValueError, match="meta_lrs"):
            hp.theta_lrs("sml", {"meta_lrs": bad})


def test_lists_of_one_value_name_the_walk_taken() -> None:
    """A file may name each choice as a list of one (what the replay then has nothing to
    choose among): the one walk fits and trains with exactly those values."""
    named = {"meta_lrs": [1e-4], "step_one_fits": ["fine_tune"], "step_one_windows": [2],
             "step_one_histories": [1.0]}
    for hyper in (hp.for_method("sml", {"sml": named}), {**hp.for_method("sml"), **named}):
        [(_, walk)] = hp.candidates("sml", hyper)
        config = hp.sml_config(walk, dim=8, seed=0)
        assert (config.meta.lr, config.step_one_window, config.step_one_history) == (1e-4, 2, 1.0)
        assert config.fit == hp.fit_config(hp.DEFAULTS["fine_tune"]["fit"])


def test_the_report_names_the_fit_window_history_and_rate_chosen(
    files: Files, tmp_path: Path
) -> None:
    hyper = tmp_path / "ladder.json"
    hyper.write_text(json.dumps({
        "sml": {**QUICK_SML, "meta_lrs": [0.0, 1e-3], "step_one_fits": ["own", "fine_tune"],
                "step_one_windows": [1, 2], "step_one_histories": [0.0, 1.0]},
        "fine_tune": {"fit": {"epochs": 2, "lr": 0.02}},
    }))
    out = tmp_path / "run"
    argv = _replay(files, out, "--roles", "2,2,1,1", methods="sml,fine_tune")
    argv[argv.index("--hyper") + 1] = str(hyper)
    assert main(argv) == 0
    sml = _results(out)["methods"]["sml"]
    (selection,) = sml["theta_lr_selection"]
    assert [(c["fit"], c["window"], c["history"], c["lr"]) for c in selection["candidates"]] == [
        (fit, window, history, lr) for fit in ("own", "fine_tune") for window in (1, 2)
        for history in (0.0, 1.0) for lr in (0.0, 1e-3)
    ]
    assert sml["hyperparameters"]["meta"]["lr"] == selection["chosen_lr"]
    assert sml["hyperparameters"]["step_one_window"] == selection["chosen_window"]
    assert sml["hyperparameters"]["step_one_history"] == selection["chosen_history"]
    fit = sml["hyperparameters"]["fit"]  # the chosen fit is the one the run used
    assert ((fit["epochs"], fit["lr"]) == (2, 0.02)) == (selection["chosen_fit"] == "fine_tune")
    report_text = (out / "report.txt").read_text()
    assert "sml: step-1 fit, window, history and step-2 rate chosen on validation" in report_text
    window = selection["chosen_window"]
    history = " + history x1" if selection["chosen_history"] else ""
    chosen = (f"{selection['chosen_fit']} {window} period{'s' * (window > 1)}{history} "
              f"lr {selection['chosen_lr']:g} of own 1 period lr 0 ")
    assert chosen in report_text
    gaps = [c["recall@20_vs_chosen"] for c in selection["candidates"]]
    close = sum(not g["excludes_zero"] for g in gaps) - 1
    assert (f"sml: {close} of {len(gaps) - 1} other candidates within the validation noise "
            "of the chosen one") in report_text


def test_step_one_fits_resolve_fine_tunes_settings_and_are_checked() -> None:
    """"fine_tune" in ``step_one_fits`` is fine-tune's fit on the same overrides; a fit
    given for SML is the fit used; anything else in the list is refused."""
    tuned = {"fine_tune": {"fit": {"epochs": 7, "lr": 0.02}}}
    sml = hp.for_method("sml", tuned)
    assert hp.step_one_fits("sml", sml) == ["own", "fine_tune"]
    assert sml["fine_tune_fit"] == hp.for_method("fine_tune", tuned)["fit"]
    chosen = hp.with_step_one_fit(sml, "fine_tune")
    assert chosen["fit"]["epochs"] == 7 and hp.step_one_fits("sml", chosen) == ["own"]
    assert hp.with_step_one_fit(sml, "own")["fit"] == sml["fit"]
    assert hp.step_one_fits("sml", hp.for_method("sml", {"sml": {"fit": {"epochs": 3}}})) == [
        "own"
    ]
    assert hp.step_one_fits("fine_tune", hp.for_method("fine_tune")) == []
    for bad in ([], ["own", "own"], ["mine"], "own"):
        with pytest.raises(ValueError, match="step_one_fits"):
            hp.step_one_fits("sml", {"step_one_fits": bad})


def test_step_one_windows_are_checked_and_a_given_window_is_used() -> None:
    """SML chooses step 1's window among ``step_one_windows`` (one period, or two); a
    window given is the window used; a live worker, which has no validation walk, fits on
    the closing period alone unless its file names one window; anything else is refused."""
    assert hp.step_one_windows("sml", hp.for_method("sml")) == [1, 2]
    assert hp.step_one_windows("fine_tune", hp.for_method("fine_tune")) == []
    given = hp.for_method("sml", {"sml": {"step_one_window": 2}})
    assert hp.step_one_windows("sml", given) == [2]
    assert hp.sml_config(given, 8, 0).step_one_window == 2
    assert hp.sml_config(hp.for_live("sml"), 8, 0).step_one_window == 1
    assert hp.for_live("sml", {"sml": {"step_one_windows": [2]}})["step_one_window"] == 2
    for bad in ([], [3], [1, 1], "1", [True]):
        with pytest.raises(ValueError, match="step_one_window"):
            hp.step_one_windows("sml", {"step_one_windows": bad})
    with pytest.raises(ValueError, match="step_one_window"):
        hp.sml_config({"step_one_window": 3}, 8, 0)


def test_step_one_histories_are_checked_and_a_given_history_is_used() -> None:
    """SML chooses among ``step_one_histories`` (default none, one and two closing periods'
    worth of seen pairs, drawn anew for each epoch); a history given is the one used; a
    live worker, which has no validation walk, adds none unless its file names one;
    anything else is refused, as is a draw other than ``epoch`` or ``once``."""
    assert hp.step_one_histories("sml", hp.for_method("sml")) == [0.0, 1.0, 2.0]
    assert hp.step_one_histories("fine_tune", hp.for_method("fine_tune")) == []
    given = hp.for_method("sml", {"sml": {"step_one_history": 0.5}})
    assert hp.step_one_histories("sml", given) == [0.5]
    assert hp.sml_config(given, 8, 0).step_one_history == 0.5
    assert hp.resolved("sml", given, 8, 0)["step_one_history"] == 0.5
    assert hp.sml_config(hp.for_live("sml"), 8, 0).step_one_history == 0.0
    assert hp.for_live("sml", {"sml": {"step_one_histories": [1]}})["step_one_history"] == 1.0
    for bad in ([], [0, 0], [-1], [11], "1", [True]):
        with pytest.raises(ValueError, match="step_one_histor"):
            hp.step_one_histories("sml", {"step_one_histories": bad})
    for value in (-1, 10.5, True, "1"):
        with pytest.raises(ValueError, match="step_one_history must be a number"):
            hp.sml_config({"step_one_history": value}, 8, 0)
    assert hp.sml_config({}, 8, 0).history_draw == "epoch"
    assert hp.sml_config({"history_draw": "once"}, 8, 0).history_draw == "once"
    with pytest.raises(ValueError, match="history_draw must be one of"):
        hp.sml_config({"history_draw": "twice"}, 8, 0)
