"""Time periods follow the clock, not the timestamps clients send.

Checked: rows stamped hours apart close no period before the window has passed
(the database holds one open period), and then exactly one closes, holding every
row; a timestamp ahead of the clock is refused with a 422 naming the row and
nothing is stored; history goes in through ``smlrec import``, cut by its event
time as asked.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import update
from worker_testkit import REPO, make_settings

from smlrec.app import create_app
from smlrec.settings import parse_period
from store import NewInteraction, Store
from store.models import Period
from worker.periods import close_due_periods

ADMIN = {"Authorization": "Bearer admin-secret"}
HOUR = 3600.0


def _age_open_period(store: Store, seconds: float) -> None:
    """Make the open period look ``seconds`` older (the clock moved on)."""
    with store._tx() as session:
        session.execute(update(Period).where(Period.status == "open")
                        .values(opened_at=Period.opened_at - seconds))


def test_timestamps_do_not_close_periods_the_clock_does(sqlite_store: Store) -> None:
    rule = parse_period("time:8h")
    start = time.time() - 300 * 9 * HOUR
    sqlite_store.ingest([NewInteraction(f"u{n}", f"i{n % 40}", start + n * 9 * HOUR, f"e{n}")
                         for n in range(300)])
    assert close_due_periods(sqlite_store, rule) == []
    assert [p.status for p in sqlite_store.list_periods()] == ["open"]

    _age_open_period(sqlite_store, 8 * HOUR)  # one window has passed
    closed = close_due_periods(sqlite_store, rule)
    assert [(p.period_id, p.n_interactions) for p in closed] == [(0, 300)]
    assert close_due_periods(sqlite_store, rule) == []  # the next window has just begun

    _age_open_period(sqlite_store, 3 * 8 * HOUR)  # three windows, nothing in them
    assert close_due_periods(sqlite_store, rule) == []
    sqlite_store.ingest([NewInteraction("u1", "i1", start, "late")])  # a late row
    assert close_due_periods(sqlite_store, rule) == []  # its window started when it was empty
    assert [p.status for p in sqlite_store.list_periods()] == ["closed", "open"]
    assert sqlite_store.count_open() == 1


def test_a_timestamp_ahead_of_the_clock_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    settings = make_settings(sqlite_url, tmp_path / "models", max_clock_skew_seconds=300)
    now = time.time()
    with TestClient(create_app(settings, run_worker=False)) as api:
        for far in (now + 3600, 253402300799.0, 1e308):  # an hour ahead, year 9999, 1e308
            rows = [{"user_id": "u1", "item_id": "i1", "timestamp": now - 60},
                    {"user_id": "u2", "item_id": "i2", "timestamp": far}]
            answer = api.post("/v1/interactions", json={"interactions": rows})
            assert answer.status_code == 422, answer.text
            (error,) = answer.json()["detail"]
            assert error["loc"] == ["body", "interactions", 1, "timestamp"]
            assert "SMLREC_MAX_CLOCK_SKEW_SECONDS" in error["msg"]
        old = [{"user_id": "u1", "item_id": "i1", "timestamp": 881250949},
               {"user_id": "u2", "item_id": "i2", "timestamp": now + 60}]
        assert api.post("/v1/interactions", json={"interactions": old}).status_code == 202
        periods = api.get("/v1/admin/periods", headers=ADMIN).json()["periods"]
    assert [(p["status"], p["n_interactions"]) for p in periods] == [("open", 2)]


def test_history_is_imported_cut_by_its_event_time(sqlite_url: str, tmp_path: Path) -> None:
    day = 86400
    lines = ["user_id,item_id,timestamp,event_id"]
    lines += [f"u{n % 7},i{n % 11},{1.6e9 + (n // 5) * day + n},h{n}" for n in range(20)]
    history = tmp_path / "history.csv"
    history.write_text("\n".join(lines) + "\n")
    env = {"SMLREC_DATABASE_URL": sqlite_url, "SMLREC_MODEL_DIR": str(tmp_path / "m"),
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "smlrec.cli", "import", str(history),
                           "--periods", "time:1d"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    store = Store.from_url(sqlite_url)
    try:
        periods = store.list_periods()
        assert [(p.status, p.n_interactions) for p in periods] == [("closed", 5)] * 4 + [
            ("open", 0)]
        assert all(p.end is not None and p.start is not None and p.end - p.start < day
                   for p in periods[:4])
        assert store.next_job() is not None  # their retrains are queued
        again = subprocess.run([sys.executable, "-m", "smlrec.cli", "import", str(history)],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr  # all duplicates: nothing new
        assert len(store.list_periods()) == 5
    finally:
        store.close()
