"""Each kind of process records its pending encryption counts when it stops."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from hub.core.db import unit_of_work
from hub.core.settings import reset_settings_cache
from hub.core.tenancy import TenantContext
from privacy import fields
from privacy.fields import FieldCipher, encryption_count

ENCRYPTIONS = 7


def encrypt_unrecorded(engine: Engine, tenant: str) -> None:
    """Encrypt fewer values than a process records at once, so the count stays pending."""
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        cipher = FieldCipher.for_tenant(session, tenant)
        for n in range(ENCRYPTIONS):
            cipher.encrypt("service_requests", "email_enc", f"R{n}", "a@example.org")


def recorded(engine: Engine, tenant: str) -> int:
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        return encryption_count(session, tenant, 1)


def stop_worker_pool_process() -> None:
    from hub.worker import app as worker_app

    worker_app._process_shutdown(pid=None)


def stop_worker_main_process() -> None:
    from hub.worker import app as worker_app

    worker_app._worker_shutdown()


def stop_api() -> None:
    from hub.api.app import create_app

    with TestClient(create_app(start_relay=False)):
        pass


EXIT_HOOKS: dict[str, Callable[[], None]] = {
    "worker pool process": stop_worker_pool_process,
    "worker main process": stop_worker_main_process,
    "api": stop_api,
}


@pytest.mark.parametrize("stop", EXIT_HOOKS.values(), ids=EXIT_HOOKS.keys())
def test_stop_records_pending_counts(configured_db, tenant, stop):
    encrypt_unrecorded(configured_db, tenant)
    assert recorded(configured_db, tenant) == 0

    stop()

    assert recorded(configured_db, tenant) == ENCRYPTIONS


def test_nothing_pending_writes_nothing(configured_db, tenant):
    stop_worker_main_process()

    assert recorded(configured_db, tenant) == 0


def test_counts_go_to_their_database(configured_db, tenant, monkeypatch, tmp_path):
    encrypt_unrecorded(configured_db, tenant)
    # Another database configured by the time the process stops, as after a benchmark's
    # scratch database.
    monkeypatch.setenv("HUB_DATABASE_URL", f"sqlite:///{tmp_path / 'other.db'}")
    reset_settings_cache()

    fields.record_pending_usage()

    assert recorded(configured_db, tenant) == ENCRYPTIONS
    assert not (tmp_path / "other.db").exists()


def test_unreachable_database_logged(configured_db, tenant, monkeypatch, capsys):
    encrypt_unrecorded(configured_db, tenant)

    def unreachable(*_args, **_kwargs):
        raise OperationalError("connect", {}, ConnectionRefusedError("refused"))

    monkeypatch.setattr(fields, "unit_of_work", unreachable)

    fields.record_pending_usage()

    assert "encryption_counts_not_recorded" in capsys.readouterr().err
