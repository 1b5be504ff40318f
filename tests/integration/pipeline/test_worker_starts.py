"""Worker starts recorded in the database and counted per host for HubWorkerCrashLoop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from hub.cli import serve
from hub.core.clock import utcnow
from hub.core.collectors import WORKER_STARTS, worker_starts_reader
from hub.core.db import get_engine, unit_of_work
from hub.core.tenancy import SystemContext
from hub.core.worker_starts import WorkerStart, record_start


def add_start(url: str, host: str, minutes_ago: float) -> None:
    with unit_of_work(SystemContext("test"), engine=get_engine(url)) as session:
        started_at = utcnow() - timedelta(minutes=minutes_ago)
        session.add(WorkerStart(host=host, node=f"hub-1@{host}", pid=1, started_at=started_at))


def start_rows(url: str) -> int:
    with unit_of_work(SystemContext("test"), engine=get_engine(url), write=False) as session:
        return int(session.scalar(select(func.count()).select_from(WorkerStart)) or 0)


def test_reader_counts_recent_starts_per_host(sqlite_url: str) -> None:
    engine = get_engine(sqlite_url)
    for _ in range(5):
        record_start("w1", "hub-7@w1", 7, engine=engine)
    record_start("w2", "hub-8@w2", 8, engine=engine)
    add_start(sqlite_url, "w1", minutes_ago=11)

    samples = worker_starts_reader(engine)()

    assert sorted(samples[WORKER_STARTS.name]) == [(("w1",), 5.0), (("w2",), 1.0)]


def test_record_start_deletes_old_rows(sqlite_url: str) -> None:
    add_start(sqlite_url, "w1", minutes_ago=25 * 60)
    add_start(sqlite_url, "w1", minutes_ago=30)

    record_start("w1", "hub-7@w1", 7, engine=get_engine(sqlite_url))

    assert start_rows(sqlite_url) == 2


def test_worker_start_failure_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []

    def fail(*args: object, **kwargs: object) -> None:
        raise OperationalError("INSERT", {}, ConnectionRefusedError("connection refused"))

    monkeypatch.setattr("hub.core.worker_starts.record_start", fail)
    monkeypatch.setattr(serve.log, "warning", lambda event, **fields: calls.append((event, fields)))

    serve._record_worker_start("hub-1@%h")

    assert [event for event, _fields in calls] == ["worker_start_not_recorded"]
    assert calls[0][1]["error"] == "OperationalError"


@pytest.mark.slow
def test_killed_workers_all_counted(sqlite_url: str, tmp_path: Path) -> None:
    """The drill: a worker killed with SIGKILL 5 times and started again each time."""
    env = os.environ.copy()
    env["HUB_DATABASE_URL"] = sqlite_url
    env.pop("HUB_BROKER_URL", None)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    (tmp_path / "metrics").mkdir()
    command = [sys.executable, "-m", "hub.cli.main", "worker", "--pool", "solo"]
    command += ["--concurrency", "1", "--no-relay", "--no-schedule"]

    for expected in range(1, 6):
        log_file = (tmp_path / f"worker-{expected}.log").open("wb")
        worker = subprocess.Popen(command, env=env, stdout=log_file, stderr=log_file)
        try:
            deadline = time.monotonic() + 60
            while start_rows(sqlite_url) < expected:
                assert worker.poll() is None, (tmp_path / f"worker-{expected}.log").read_text()
                assert time.monotonic() < deadline, "the worker did not record its start"
                time.sleep(0.2)
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            log_file.close()

    samples = worker_starts_reader(get_engine(sqlite_url))()

    assert samples[WORKER_STARTS.name] == [((socket.gethostname(),), 5.0)]
