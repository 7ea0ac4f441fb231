"""The embedded worker in a child process (``SMLREC_WORKER_MODE=process``, the
default): ``smlrec serve`` as a real subprocess, its worker found through
/proc. Checked: retrains run in the child (not in the API process) and reach
the API through the store; a child killed with SIGKILL is restarted and the
next retrain succeeds; a service killed with SIGKILL takes its worker with it
(no orphan keeps leading)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from worker_testkit import Processes, bodies_of, free_port, wait_for, wait_healthy

from sml.data import InteractionLog
from worker.process import ORPHAN_GRACE_S, POLL_S

pytestmark = pytest.mark.slow

ADMIN = {"Authorization": "Bearer admin-secret"}
PERIOD = 300


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _nice(pid: int) -> int | None:
    try:  # /proc/<pid>/stat: field 19 is the nice value; fields from 3 on follow ")"
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
    except OSError:
        return None


def _worker_child(pid: int) -> int | None:
    """The spawned worker among ``pid``'s children (not multiprocessing's
    resource tracker)."""
    for child in _children(pid):
        line = _cmdline(child)
        if "spawn_main" in line and "resource_tracker" not in line and _alive(child):
            return child
    return None


def _retrain(client: httpx.Client, log: InteractionLog, period: int) -> dict[str, Any]:
    body = {"interactions": bodies_of(log, period * PERIOD, (period + 1) * PERIOD)}
    assert client.post("/v1/interactions", json=body).status_code == 202
    response = client.post("/v1/admin/retrain", headers=ADMIN)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]

    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/v1/admin/jobs/{job_id}", headers=ADMIN).json()
        return job if job["status"] in ("succeeded", "failed") else None

    job = wait_for(finished, timeout=600, every=0.2)
    assert job["status"] == "succeeded", job["error"]
    return job


def test_worker_process_trains_is_restarted_and_dies_with_the_service(
    sqlite_url: str, tmp_path: Path, processes: Processes, small_log: InteractionLog
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "SMLREC_DATABASE_URL": sqlite_url,
        "SMLREC_MODEL_DIR": str(tmp_path / "models"),
        "SMLREC_PERIOD": "manual",
        "SMLREC_ADMIN_TOKEN": "admin-secret",
        "SMLREC_EMBED_DIM": "8",
        "SMLREC_WORKER_POLL_SECONDS": "0.05",
        "SMLREC_SWAP_POLL_SECONDS": "0.2",
        "SMLREC_PORT": str(port),
    }
    service = processes.start("serve", ["serve"], env)
    wait_healthy(base, service)
    worker = wait_for(lambda: _worker_child(service.pid), timeout=600)
    # SMLREC_WORKER_NICE's default (10) on top of the service's own niceness,
    # which is whatever the suite runs under (``nice -n 10 pytest`` included)
    expected = min(_nice(service.pid) + 10, 19)  # type: ignore[operator]
    assert wait_for(lambda: _nice(worker) == expected, timeout=600)

    with httpx.Client(base_url=base, timeout=30.0) as client:
        first = _retrain(client, small_log, 0)
        wait_for(lambda: client.get("/readyz").json()["model_version"] == first["model_version"],
                 timeout=600)

        os.kill(worker, signal.SIGKILL)
        restarted = wait_for(
            lambda: (child := _worker_child(service.pid)) not in (None, worker) and child,
            timeout=600)
        second = _retrain(client, small_log, 1)
        assert second["model_version"] == first["model_version"] + 1
        wait_for(lambda: client.get("/readyz").json()["model_version"] == second["model_version"],
                 timeout=600)
        assert "worker process" in processes.log("serve")  # the restart was logged

    service.send_signal(signal.SIGKILL)
    service.wait(timeout=10)
    assert wait_for(lambda: not _alive(restarted), timeout=ORPHAN_GRACE_S + 4 * POLL_S + 60.0)
