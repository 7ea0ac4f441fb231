"""Readers, period splitting and the synthetic generator of sml.data."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import subprocess
import zipfile
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from sml import data, readers
from sml.data import (
    DataFormatError,
    InteractionLog,
    from_records,
    split_daily,
    split_equal_count,
    split_time_windows,
)
from sml.readers import (
    load_dataset,
    load_movielens_100k,
    read_adressa_events,
    read_csv,
    read_grouplens_udata,
    read_recbole_inter,
    read_yelp_reviews,
)
from sml.synthetic import SYNTHETIC_PROFILES, SyntheticConfig, synthetic_drift

SAMPLES = Path(__file__).parent / "samples"
OSLO = ZoneInfo("Europe/Oslo")


def oslo(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=OSLO).timestamp()


def log_of(timestamps: list[float]) -> InteractionLog:
    n = len(timestamps)
    return from_records([f"u{k % 3}" for k in range(n)], [f"i{k}" for k in range(n)], timestamps)


# ---------------------------------------------------------------- from_records


def test_from_records_sorts_stably_and_numbers_by_first_appearance() -> None:
    log = from_records(["b", "a", "c", "b", "a"], ["x", "y", "x", "z", "z"], [5, 1, 5, 0, 3])
    # time order: (b,z,0) (a,y,1) (a,z,3) (b,x,5) (c,x,5): the tie keeps b before c
    assert log.timestamps.tolist() == [0, 1, 3, 5, 5]
    assert log.user_ids == ("b", "a", "c")
    assert log.item_ids == ("z", "y", "x")
    assert log.users.tolist() == [0, 1, 1, 0, 2]
    assert log.items.tolist() == [0, 1, 0, 2, 2]
    assert log.users.dtype == np.int64 and log.timestamps.dtype == np.float64
    assert (len(log), log.n_users, log.n_items) == (5, 3, 3)


def test_from_records_empty_and_mismatched() -> None:
    log = from_records([], [], [])
    assert (len(log), log.n_users, log.n_items) == (0, 0, 0)
    assert split_equal_count(log, period_size=10) == []
    with pytest.raises(ValueError, match="same length"):
        from_records(["a"], ["x", "y"], [1.0])


def test_from_records_keeps_distinct_ids_apart() -> None:
    ids = ["7", "07", "7 ", "a\u00e9", "ae", "", "x" * 40, "x" * 39]
    log = from_records(ids, ids, np.arange(len(ids), dtype=float))
    assert log.user_ids == tuple(ids)
    assert log.users.tolist() == list(range(len(ids)))


# ---------------------------------------------------------------- readers


def check_ml_head(log: InteractionLog) -> None:
    """The eight rows of the ML-100K samples (two timestamp ties among them)."""
    assert log.user_ids == ("22", "166", "196", "186")
    assert log.item_ids == ("377", "242", "51", "265", "474", "346", "302")
    assert log.users.tolist() == [0, 1, 2, 2, 0, 3, 1, 3]
    assert log.items.tolist() == [0, 1, 2, 1, 3, 4, 5, 6]
    assert log.timestamps[0] == 878887116 and log.timestamps[-1] == 891717742


def test_read_recbole_inter() -> None:
    check_ml_head(read_recbole_inter(SAMPLES / "ml-100k-head.inter"))


def test_read_recbole_inter_columns_in_any_order(tmp_path: Path) -> None:
    path = tmp_path / "x.inter"
    path.write_text("timestamp:float\tlabel:float\titem_id:token\tuser_id:token\n"
                    "20\t1\tB\tu2\n10\t1\tA\tu1\n")
    log = read_recbole_inter(path)
    assert log.user_ids == ("u1", "u2") and log.item_ids == ("A", "B")


def test_read_grouplens_udata_matches_inter() -> None:
    log = read_grouplens_udata(SAMPLES / "u.data")
    check_ml_head(log)


def test_read_csv_mixes_unix_and_iso_times() -> None:
    log = read_csv(SAMPLES / "interactions.csv")
    assert log.user_ids == ("alice", "bob", "carol")
    assert log.item_ids == ("book-1", "book-2", "book-3", "book,4")
    assert log.timestamps.tolist() == [1483261200, 1483261200, 1483263000, 1483272000]


def test_read_csv_custom_columns(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("when,who,what\n2.5,u,i\n\n1,v,j\n")
    log = read_csv(path, user_col="who", item_col="what", time_col="when")
    assert log.user_ids == ("v", "u") and log.timestamps.tolist() == [1.0, 2.5]


def test_read_yelp_reviews() -> None:
    log = read_yelp_reviews(SAMPLES / "yelp_review.json")
    assert len(log) == 5 and (log.n_users, log.n_items) == (4, 4)
    assert log.user_ids[0] == "OyoGAe7OKpv6SyGZT5g77Q"  # the 2012 review comes first
    assert log.timestamps[0] == datetime.fromisoformat("2012-01-03 15:28:18+00:00").timestamp()
    assert log.user_ids[log.users[-1]] == "mh_-eMZ6K5RLWhZyISBhwA"


def test_read_adressa_events_skips_page_views() -> None:
    log = read_adressa_events(SAMPLES / "adressa" / "20170101")
    assert len(log) == 3  # the front-page view has no article id
    assert log.users.tolist() == [0, 1, 0]  # a tie at 1483257600 keeps file order
    assert log.items.tolist() == [0, 1, 1]
    both = read_adressa_events(SAMPLES / "adressa")
    assert len(both) == 4 and both.n_items == 3


MALFORMED = [
    (read_recbole_inter, "a.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n"
     "1\t2\n", 3, "2 fields"),
    (read_recbole_inter, "a.inter", "user_id:token\titem_id:token\ttimestamp:float\n"
     "1\t2\tsoon\n", 2, "not a number"),
    (read_recbole_inter, "a.inter", "user_id:token\ttimestamp:float\n1\t3\n", 1, "item_id"),
    (read_grouplens_udata, "u.data", "1\t2\t5\t881250949\n\n3\t4\t5\n", 3, "expected 4"),
    (read_grouplens_udata, "u.data", "1\t2\t5\t881250949\n\t4\t5\t881250949\n", 2, "empty"),
    (read_grouplens_udata, "u.data", "1\t2\t5\tinf\n", 1, "not finite"),
    (read_csv, "a.csv", "user_id,item_id,timestamp\na,b,2017-13-45\n", 2, "not a date"),
    (read_csv, "a.csv", "user_id,item_id,timestamp\na,b,1\na,b\n", 3, "2 fields"),
    (read_yelp_reviews, "r.json", '{"user_id":"a","business_id":"b","date":"2018-01-01"}\n'
     '{"user_id":"a",\n', 2, "invalid JSON"),
    (read_yelp_reviews, "r.json", '{"user_id":"a","date":"2018-01-01"}\n', 1, "business_id"),
    (read_yelp_reviews, "r.json", '{"user_id":"","business_id":"b","date":"2018-01-01"}\n',
     1, "empty"),
    (read_adressa_events, "e", '{"id":"x","time":1}\n', 1, "userId"),
    (read_adressa_events, "e", '{"userId":"u","id":"x","time":1}\n'
     '{"userId":"u","id":"y","time":"noon"}\n', 2, "not a number"),
    (read_adressa_events, "e", '{"userId":"u","id":"x","time":1}\n[1, 2]\n', 2, "JSON object"),
]


@pytest.mark.parametrize(("reader", "name", "text", "line", "reason"), MALFORMED)
def test_malformed_line_names_file_and_line(
    tmp_path: Path, reader: object, name: str, text: str, line: int, reason: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataFormatError) as caught:
        reader(path)  # type: ignore[operator]
    assert caught.value.line == line
    message = str(caught.value)
    assert str(path) in message and f"line {line}" in message and reason in message


def test_load_dataset_dispatch(tmp_path: Path) -> None:
    check_ml_head(load_dataset(str(SAMPLES / "ml-100k-head.inter")))
    check_ml_head(load_dataset(str(SAMPLES / "u.data")))
    assert load_dataset(str(SAMPLES / "interactions.csv")).n_users == 3
    assert len(load_dataset(str(SAMPLES / "yelp_review.json"))) == 5
    assert len(load_dataset(str(SAMPLES / "adressa" / "20170101"))) == 3
    assert len(load_dataset(str(SAMPLES / "adressa"))) == 4
    assert len(load_dataset("synthetic")) == 6 * 2000
    (tmp_path / "notes.txt").write_text("hello\n")
    for name in ("ml-1m", str(tmp_path / "notes.txt"), str(tmp_path / "missing.inter")):
        with pytest.raises(ValueError, match="ml-100k"):
            load_dataset(name)


# ---------------------------------------------------------------- MovieLens-100K cache


def fake_wheel(folder: Path, member_text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / readers.RECBOLE_WHEEL
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(readers.ML100K_MEMBER, member_text)
        archive.writestr("recbole/__init__.py", "")
    return wheel


def refuse_download(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(["pip"], 1, "", "network is off")


def test_movielens_extracts_checks_and_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (SAMPLES / "ml-100k-head.inter").read_text()
    monkeypatch.setattr(readers, "ML100K_SHA256", hashlib.sha256(text.encode()).hexdigest())
    monkeypatch.setattr(readers.subprocess, "run", refuse_download)
    wheel = fake_wheel(tmp_path, text)
    check_ml_head(load_movielens_100k(tmp_path))
    assert (tmp_path / "ml-100k.inter").read_text() == text
    wheel.unlink()  # the cached file is enough from now on
    check_ml_head(load_movielens_100k(tmp_path))
    monkeypatch.setenv("SMLREC_CACHE_DIR", str(tmp_path))
    check_ml_head(load_dataset("ml-100k"))


def test_movielens_rejects_a_wrong_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers.subprocess, "run", refuse_download)
    fake_wheel(tmp_path, "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n")
    with pytest.raises(DataFormatError, match="sha256"):
        load_movielens_100k(tmp_path)
    assert not (tmp_path / "ml-100k.inter").exists()


def test_movielens_reports_a_failed_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers.subprocess, "run", refuse_download)
    with pytest.raises(RuntimeError, match="network is off"):
        load_movielens_100k(tmp_path / "empty")


def test_movielens_real_data_from_default_cache() -> None:
    cache = readers._default_cache_dir()
    if not ((cache / "ml-100k.inter").is_file() or (cache / readers.RECBOLE_WHEEL).is_file()):
        pytest.skip(f"ML-100K is not cached in {cache}")
    log = load_movielens_100k()
    assert (len(log), log.n_users, log.n_items) == (100_000, 943, 1_682)
    assert bool(np.all(np.diff(log.timestamps) >= 0))
    periods = split_equal_count(log, n_periods=20)
    assert [len(p) for p in periods] == [5000] * 20
    assert (periods[-1].n_users, periods[-1].n_items) == (943, 1_682)


# ---------------------------------------------------------------- periods


def test_split_equal_count_by_number_puts_the_remainder_last() -> None:
    log = log_of([float(t) for t in range(23)])
    periods = split_equal_count(log, n_periods=4)
    assert [(p.index, p.start, p.stop, len(p)) for p in periods] == [
        (0, 0, 5, 5), (1, 5, 10, 5), (2, 10, 15, 5), (3, 15, 23, 8)]
    assert periods[1].items.tolist() == list(range(5, 10))
    assert np.shares_memory(periods[1].items, log.items)
    assert [p.n_users for p in periods] == [3, 3, 3, 3]
    assert [p.n_items for p in periods] == [5, 10, 15, 23]


def test_split_equal_count_by_size_and_arguments() -> None:
    log = log_of([float(t) for t in range(23)])
    assert [len(p) for p in split_equal_count(log, period_size=10)] == [10, 10, 3]
    assert [len(p) for p in split_equal_count(log, period_size=23)] == [23]
    for kwargs in ({}, {"period_size": 5, "n_periods": 2}, {"period_size": 0},
                   {"n_periods": 24}, {"n_periods": 0}):
        with pytest.raises(ValueError):
            split_equal_count(log, **kwargs)


def test_split_time_windows_drops_empty_windows() -> None:
    log = log_of([0.0, 5.0, 9.9, 10.0, 35.0, 39.0, 40.0])
    periods = split_time_windows(log, width_seconds=10)
    assert [(p.index, p.start, p.stop) for p in periods] == [(0, 0, 3), (1, 3, 4), (2, 4, 6),
                                                             (3, 6, 7)]
    shifted = split_time_windows(log, width_seconds=10, origin=-5.0)
    assert [len(p) for p in shifted] == [1, 3, 3]  # [-5, 5), [5, 15), [35, 45)
    with pytest.raises(ValueError):
        split_time_windows(log, width_seconds=0)


def test_split_daily_uses_oslo_local_time() -> None:
    stamps = [
        oslo(2017, 1, 1, 0, 0, 13),   # 0-10h of Jan 1 (23:00:13 UTC on Dec 31)
        oslo(2017, 1, 1, 9, 59, 59),
        oslo(2017, 1, 1, 10, 0, 0),   # 10-17h
        oslo(2017, 1, 1, 23, 59, 59),  # 17-24h
        oslo(2017, 1, 2, 0, 0, 0),    # 0-10h of Jan 2
        oslo(2017, 1, 3, 16, 0, 0),   # Jan 2 10h .. Jan 3 16h: empty periods dropped
        oslo(2017, 7, 1, 0, 30, 0),   # summer time: 22:30 UTC on June 30
    ]
    periods = split_daily(log_of(stamps))
    assert [(p.start, p.stop) for p in periods] == [(0, 2), (2, 3), (3, 4), (4, 5), (5, 6),
                                                    (6, 7)]
    assert [p.index for p in periods] == list(range(6))
    utc = split_daily(log_of(stamps), tz="UTC")
    assert [(p.start, p.stop) for p in utc][:2] == [(0, 1), (1, 3)]  # Dec 31 17-24h first


def test_split_daily_on_adressa_sample() -> None:
    periods = split_daily(read_adressa_events(SAMPLES / "adressa"))
    assert [len(p) for p in periods] == [3, 1]
    with pytest.raises(ValueError):
        split_daily(log_of([0.0]), hours=(10, 5))


# ---------------------------------------------------------------- synthetic drift


SMALL = SyntheticConfig(n_periods=4, interactions_per_period=500, n_users_initial=60,
                        n_items_initial=80, new_users_per_period=15, new_items_per_period=10)


def test_synthetic_is_reproducible() -> None:
    a, b = synthetic_drift(SMALL), synthetic_drift(SMALL)
    other = synthetic_drift(dataclasses.replace(SMALL, seed=1))
    assert np.array_equal(a.users, b.users) and np.array_equal(a.items, b.items)
    assert np.array_equal(a.timestamps, b.timestamps) and a.user_ids == b.user_ids
    assert not (np.array_equal(a.users, other.users) and np.array_equal(a.items, other.items))


def test_synthetic_log_shape() -> None:
    log = synthetic_drift(SMALL)
    assert len(log) == SMALL.n_periods * SMALL.interactions_per_period
    pairs = log.users * log.n_items + log.items
    assert len(np.unique(pairs)) == len(log)  # no repeated (user, item)
    periods = split_time_windows(log, width_seconds=SMALL.period_seconds,
                                 origin=SMALL.start_time)
    assert [len(p) for p in periods] == [SMALL.interactions_per_period] * SMALL.n_periods
    for before, period in itertools.pairwise(periods):
        assert period.n_users > before.n_users and period.n_items > before.n_items
        assert np.isin(period.users, before.users).mean() > 0.3  # active users come back
        assert bool(np.all(np.diff(period.timestamps) > 0))


def test_a_repeat_share_replays_each_users_own_earlier_pairs() -> None:
    """With ``repeat`` > 0 that share of each later period's rows is a pair the log holds
    from an earlier period (the user's own), spread through the period; the rest are new
    pairs, the period keeps its size, and ``repeat`` 0 is the log as it always was."""
    log = synthetic_drift(dataclasses.replace(SMALL, repeat=0.3))
    pairs = log.users * log.n_items + log.items
    periods = split_time_windows(log, width_seconds=SMALL.period_seconds,
                                 origin=SMALL.start_time)
    assert [len(p) for p in periods] == [SMALL.interactions_per_period] * SMALL.n_periods
    for period in periods[1:]:
        earlier = np.isin(pairs[period.start:period.stop], pairs[: period.start])
        assert earlier.mean() == 0.3
        assert len(np.unique(pairs[period.start:period.stop][~earlier])) == (~earlier).sum()
        assert 0.1 < earlier[: len(earlier) // 2].mean() < 0.5  # not bunched at one end
        assert bool(np.all(np.diff(period.timestamps) > 0))
    assert len(np.unique(pairs[: periods[0].stop])) == len(periods[0])  # nothing to repeat
    plain = synthetic_drift(SMALL)
    assert np.array_equal(synthetic_drift(dataclasses.replace(SMALL, repeat=0.0)).items,
                          plain.items)
    with pytest.raises(ValueError, match="repeat"):
        SyntheticConfig(repeat=1.0)


@pytest.mark.slow
def test_the_yelp_sized_profile_has_the_papers_shape() -> None:
    """synthetic-yelp: 3.0M interactions in 40 equal periods, Yelp's users and items
    (59k, 123k in the paper), no repeated pair, and users who come back."""
    log = synthetic_drift(SYNTHETIC_PROFILES["synthetic-yelp"])
    assert len(log) == 3_000_000
    assert 58_000 <= log.n_users <= 60_000 and 120_000 <= log.n_items <= 128_000
    assert len(np.unique(log.users * log.n_items + log.items)) == len(log)
    periods = split_equal_count(log, n_periods=40)
    assert {len(p) for p in periods} == {75_000}
    first_row = np.full(log.n_users, len(log))
    np.minimum.at(first_row, log.users, np.arange(len(log)))
    for period in periods[2:]:
        returning = first_row[period.users] < period.start
        assert returning.mean() > 0.85


def test_synthetic_signal_is_learnable() -> None:
    """A rank-16 factorisation of periods 0-4 ranks next-period items far above chance."""
    log = synthetic_drift(SyntheticConfig())
    periods = split_equal_count(log, n_periods=6)
    seen, test = periods[4], periods[5]
    matrix = np.zeros((seen.n_users, seen.n_items))
    matrix[log.users[: seen.stop], log.items[: seen.stop]] = 1.0
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    scores = (u[:, :16] * s[:16]) @ vt[:16]
    known = (test.users < seen.n_users) & (test.items < seen.n_items)
    users, items = test.users[known], test.items[known]
    negatives = np.random.default_rng(0).integers(0, seen.n_items, (len(users), 99))
    rank = (scores[users[:, None], negatives] > scores[users, items][:, None]).sum(1)
    assert (rank < 10).mean() > 0.25  # random: 0.10


# ---------------------------------------------------------------- ratings.dat, columns, repeats


def test_read_grouplens_dat_and_dispatch(tmp_path: Path) -> None:
    lines = [line.split("\t") for line in (SAMPLES / "u.data").read_text().splitlines()]
    path = tmp_path / "ratings.dat"
    path.write_text("".join("::".join(fields) + "\n" for fields in lines))
    check_ml_head(readers.read_grouplens_dat(path))
    check_ml_head(load_dataset(str(path)))
    # a tab-separated .dat file is read as u.data
    tabbed = tmp_path / "plays.dat"
    tabbed.write_text((SAMPLES / "u.data").read_text())
    check_ml_head(load_dataset(str(tabbed)))


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("1::2::5::881250949\n1::2::5\n", 2, "3 fields separated by '::', expected 4"),
        ("1::2::5::881250949\n\n3::4::5::noon\n", 3, "not a number"),
        ("1::2::5::881250949\n::4::5::881250949\n", 2, "empty user or item id"),
    ],
)
def test_malformed_ratings_dat_names_the_line(
    tmp_path: Path, text: str, line: int, reason: str
) -> None:
    path = tmp_path / "ratings.dat"
    path.write_text(text)
    with pytest.raises(DataFormatError) as caught:
        load_dataset(str(path))
    assert caught.value.line == line and reason in str(caught.value)


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("u.data", b"1\t2\t5\t3\n\xff\t2\t5\t3\n", 2),
        ("a.csv", b"user_id,item_id,timestamp\n1,2,3\n\xff,2,3\n", 3),
        ("r.json", b'{"user_id":"a","business_id":"b","date":"2018-01-01"}\n\xff\n', 2),
    ],
)
def test_a_line_that_is_not_utf8_is_named(
    tmp_path: Path, name: str, content: bytes, line: int
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match="not UTF-8") as caught:
        load_dataset(str(path))
    assert caught.value.line == line


def test_load_dataset_names_a_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.csv"
    with pytest.raises(DataFormatError, match="no such file") as caught:
        load_dataset(str(missing))
    assert caught.value.path == str(missing)


def test_load_dataset_maps_csv_columns(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,10,4.0,20\n2,11,3.5,10\n")
    columns = readers.CsvColumns(user="userId", item="movieId", time="timestamp")
    log = load_dataset(str(path), columns=columns)
    assert log.user_ids == ("2", "1") and log.item_ids == ("11", "10")
    with pytest.raises(DataFormatError, match="no column 'user_id'"):
        load_dataset(str(path))


def test_drop_repeats_keeps_each_pairs_first_row() -> None:
    # time order: (a,x,1) (b,x,2) (a,x,3) (a,y,4) (b,x,5) (c,z,6)
    log = from_records(["a", "b", "a", "a", "b", "c"], ["x", "x", "x", "y", "x", "z"],
                       [1, 2, 3, 4, 5, 6])
    kept = data.drop_repeats(log)
    assert kept.timestamps.tolist() == [1, 2, 4, 6]
    assert [kept.user_ids[u] for u in kept.users] == ["a", "b", "a", "c"]
    assert [kept.item_ids[i] for i in kept.items] == ["x", "x", "y", "z"]
    assert kept.user_ids == log.user_ids and kept.item_ids == log.item_ids
    assert len(data.drop_repeats(kept)) == len(kept)


def test_the_small_yelp_profile_is_the_yelp_profile_at_a_tenth() -> None:
    """synthetic-yelp-small: the periods, topics, drift and churn of synthetic-yelp, with
    a tenth of its interactions, users and items (so as many interactions per user)."""
    small, full = SYNTHETIC_PROFILES["synthetic-yelp-small"], SYNTHETIC_PROFILES["synthetic-yelp"]
    assert small.n_periods == full.n_periods and small.n_topics == full.n_topics
    assert (small.drift, small.churn, small.long_term_weight) == (
        full.drift, full.churn, full.long_term_weight)
    for field in ("interactions_per_period", "n_users_initial", "n_items_initial",
                  "new_users_per_period", "new_items_per_period"):
        assert getattr(small, field) * 10 == pytest.approx(getattr(full, field), rel=0.01)
    log = synthetic_drift(small)
    assert len(log) == 300_000
    assert 5_800 <= log.n_users <= 6_000 and 12_000 <= log.n_items <= 12_800
