"""`hub alerts subscribers import`: re-running a list creates no duplicate subscribers. Records
are matched by a blind index of their channel addresses, in each tenant on its own."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alerts_support import NYC_POINT, add_resident, add_tenant
from sqlalchemy import Engine, func, select

from hub.alerts import importer
from hub.alerts import models as m
from hub.alerts.importer import import_subscribers
from hub.alerts.subscriptions import unsubscribe, unsubscribe_token
from hub.core.db import unit_of_work
from hub.core.tenancy import TenantContext

CSV_HEADER = "lat,lon,languages,email,sms,webhook,webpush,test_opt_in,consent_at\n"
CONSENT = "2026-01-01T00:00:00-05:00"
ALICE = f"40.7128,-74.0060,en,alice@example.org,,,,false,{CONSENT}\n"
BRUNO = f"40.7306,-73.9352,es;en,,+12125550100,,,true,{CONSENT}\n"


def write_csv(tmp_path: Path, *rows: str, name: str = "opt-in.csv") -> Path:
    path = tmp_path / name
    path.write_text(CSV_HEADER + "".join(rows), encoding="utf-8")
    return path


def subscriber_count(engine: Engine, tenant_id: str) -> int:
    with unit_of_work(TenantContext(tenant_id), engine=engine, write=False) as session:
        return session.scalar(select(func.count()).select_from(m.Subscriber)) or 0


def test_import_per_tenant(engine, tmp_path) -> None:
    first = add_tenant(engine)
    second = add_tenant(engine)
    path = write_csv(tmp_path, ALICE, BRUNO)

    import_subscribers(engine, first, path)
    result = import_subscribers(engine, second, path)

    assert result["imported"] == 2
    assert result["skipped_existing"] == 0
    assert subscriber_count(engine, first) == 2
    assert subscriber_count(engine, second) == 2


def test_import_twice_no_duplicates(engine, tmp_path) -> None:
    tenant = add_tenant(engine)
    path = write_csv(tmp_path, ALICE, BRUNO)

    first = import_subscribers(engine, tenant, path)
    again = import_subscribers(engine, tenant, path)

    assert first["imported"] == 2
    assert first["skipped_existing"] == 0
    assert again["imported"] == 0
    assert again["skipped_existing"] == 2
    assert again["skipped"] == 0
    assert again["problems"] == []
    assert subscriber_count(engine, tenant) == 2


def test_import_again_as_json(engine, tmp_path) -> None:
    tenant = add_tenant(engine)
    path = tmp_path / "opt-in.json"
    record = {
        "places": [[40.7128, -74.006]],
        "languages": ["en"],
        "channels": {"email": "alice@example.org", "sms": "+12125550100"},
        "consent_at": CONSENT,
    }
    path.write_text(json.dumps([record]), encoding="utf-8")

    import_subscribers(engine, tenant, path)
    # The same addresses typed differently and in another order are the same resident.
    record["channels"] = {"sms": "(212) 555-0100", "email": " Alice@Example.org"}
    path.write_text(json.dumps([record]), encoding="utf-8")
    again = import_subscribers(engine, tenant, path)

    assert again["imported"] == 0
    assert again["skipped_existing"] == 1
    assert subscriber_count(engine, tenant) == 1


def test_import_repeated_record(engine, tmp_path) -> None:
    tenant = add_tenant(engine)
    path = write_csv(tmp_path, ALICE, BRUNO, ALICE)

    result = import_subscribers(engine, tenant, path)

    assert result["imported"] == 2
    assert result["skipped_existing"] == 1
    assert subscriber_count(engine, tenant) == 2


def test_concurrent_imports_add_once(engine, tmp_path, monkeypatch) -> None:
    """Two imports of one file at the same moment: the second waits for the first one's
    chunk to commit and then finds its residents, so each resident is added once."""
    tenant = add_tenant(engine)
    path = write_csv(tmp_path, ALICE, BRUNO)
    # One record a chunk, so the two imports take turns within the file.
    monkeypatch.setattr(importer, "CHUNK", 1)
    # Each match waits until the other import has matched too, or for 2 seconds. Without a
    # lock both imports then miss the other's uncommitted resident and both add it. With
    # the lock the second import cannot reach its match, and the first waits only 2 seconds.
    both_matching = threading.Barrier(2, timeout=2)
    find_by_channels = importer.find_by_channels

    def find_together(*args):
        try:
            both_matching.wait()
        except threading.BrokenBarrierError:
            pass
        return find_by_channels(*args)

    monkeypatch.setattr(importer, "find_by_channels", find_together)
    with ThreadPoolExecutor(max_workers=2) as pool:
        imports = [pool.submit(import_subscribers, engine, tenant, path) for _ in range(2)]
        results = [future.result(timeout=60) for future in imports]

    assert subscriber_count(engine, tenant) == 2
    assert sum(result["imported"] for result in results) == 2
    assert sum(result["skipped_existing"] for result in results) == 2


def test_import_other_channels_new(engine, tmp_path) -> None:
    tenant = add_tenant(engine)
    import_subscribers(engine, tenant, write_csv(tmp_path, ALICE))
    with_sms = f"40.7128,-74.0060,en,alice@example.org,+12125550100,,,false,{CONSENT}\n"

    result = import_subscribers(engine, tenant, write_csv(tmp_path, with_sms, name="new.csv"))

    assert result["imported"] == 1
    assert result["skipped_existing"] == 0


def test_import_skips_api_subscriber(engine, tmp_path) -> None:
    tenant = add_tenant(engine)
    add_resident(engine, tenant, NYC_POINT, {"email": "alice@example.org"})

    result = import_subscribers(engine, tenant, write_csv(tmp_path, ALICE))

    assert result["imported"] == 0
    assert result["skipped_existing"] == 1
    assert subscriber_count(engine, tenant) == 1


def test_import_keeps_unsubscribed(engine, tmp_path) -> None:
    tenant = add_tenant(engine)
    path = write_csv(tmp_path, ALICE)
    import_subscribers(engine, tenant, path)
    ctx = TenantContext(tenant, actor="test")
    with unit_of_work(ctx, engine=engine) as session:
        subscriber_id = session.scalar(select(m.Subscriber.id))
        unsubscribe(session, ctx, unsubscribe_token(tenant, subscriber_id))

    again = import_subscribers(engine, tenant, path)

    assert again["imported"] == 0
    assert again["skipped_existing"] == 1
    with unit_of_work(ctx, engine=engine, write=False) as session:
        active = session.scalars(select(m.Subscriber.active)).all()
    assert active == [False]


def test_import_stores_no_address(engine, tmp_path) -> None:
    tenant = add_tenant(engine)
    import_subscribers(engine, tenant, write_csv(tmp_path, ALICE))

    with unit_of_work(TenantContext(tenant), engine=engine, write=False) as session:
        subscriber = session.scalars(select(m.Subscriber)).one()
    assert subscriber.channels_bidx is not None
    assert len(subscriber.channels_bidx) == 32
    assert "alice" not in subscriber.channels_bidx
    assert subscriber.bidx_version == 1


def test_import_command_report(engine, cli, tmp_path) -> None:
    tenant = add_tenant(engine)
    path = write_csv(tmp_path, ALICE, BRUNO)
    cli("subscribers", "import", str(path), "--tenant", tenant)

    again = cli("subscribers", "import", str(path), "--tenant", tenant)
    as_json = cli("subscribers", "import", str(path), "--tenant", tenant, "--json")

    assert again.exit_code == 0, again.output
    assert (
        "0 subscribers imported, 2 skipped as already subscribed, 0 skipped as invalid"
        in again.stdout
    )
    assert json.loads(as_json.stdout)["skipped_existing"] == 2


def test_import_csv_problem_messages(engine, tmp_path) -> None:
    tenant = add_tenant(engine)
    rows = {
        2: ("forty,-74.0060,en,a@example.org,,,,false,2026-01-01T00:00:00-05:00\n", "column lat"),
        3: (",-74.0060,en,b@example.org,,,,false,2026-01-01T00:00:00-05:00\n", "column lat"),
        4: ("40.7128,,en,c@example.org,,,,false,2026-01-01T00:00:00-05:00\n", "column lon"),
        5: ("40.7128,-74.0060,en,d@example.org,,,,false,yesterday\n", "column consent_at"),
        6: ("40.7128,-74.0060,en,e@example.org,,,,false,\n", "column consent_at"),
        7: ("40.7128,-74.0060,en,,,,,false,2026-01-01T00:00:00-05:00\n", "channels"),
        8: ("40.7128,-74.0060,en,f@example.org,,,,false,2026-01-01T00:00:00\n", "consent_at"),
    }
    path = write_csv(tmp_path, *(row for row, _column in rows.values()))

    result = import_subscribers(engine, tenant, path)

    assert result["imported"] == 0
    assert result["skipped"] == len(rows)
    messages = dict(zip(rows, result["problems"], strict=True))
    for line, (_row, column) in rows.items():
        message = messages[line]
        assert message.startswith(f"record {line}: "), message
        assert message.count("record ") == 1, message
        assert column in message, message
        assert "; give " in message, message
        assert "example.org" not in message, message
    assert "'yesterday' is invalid" in messages[5]
    assert "is not a number" in messages[2]
    assert "is missing" in messages[3]


def test_import_csv_places_column(engine, tmp_path) -> None:
    tenant = add_tenant(engine)
    path = tmp_path / "places.csv"
    path.write_text(
        "places,email,consent_at\n"
        f'"40.7128,-74.0060;40.7306",a@example.org,{CONSENT}\n'
        f'"40.7128,-74.0060;40.73,north",b@example.org,{CONSENT}\n',
        encoding="utf-8",
    )

    result = import_subscribers(engine, tenant, path)

    assert result["problems"] == [
        "record 2: column places: place 2 is not a latitude,longitude pair; separate the two "
        "numbers with ',' and the places with ';', such as 40.7128,-74.0060;40.7306,-73.9352",
        "record 3: column places: place 2 longitude is not a number; give decimal degrees, "
        "such as 40.7128 for a latitude or -74.0060 for a longitude",
    ]


def test_import_json_problem_messages(engine, tmp_path) -> None:
    tenant = add_tenant(engine)
    good = {
        "places": [[40.7128, -74.006]],
        "channels": {"email": "a@example.org"},
        "consent_at": CONSENT,
    }
    records = [
        "not an object",
        {**good, "places": "40.7,-74.0"},
        {**good, "places": [[40.7128, "west"]]},
        {**good, "channels": ["a@example.org"]},
        {**good, "channels": {"sms": 2125550100}},
        {**good, "languages": "en"},
        {**good, "consent_at": "soon"},
    ]
    path = tmp_path / "opt-in.json"
    path.write_text(json.dumps(records), encoding="utf-8")

    result = import_subscribers(engine, tenant, path)

    assert result["imported"] == 0
    expected = [
        "record 1: this entry is not a JSON object",
        "record 2: field places is not a list",
        "record 3: field places: place 1 longitude is not a number",
        "record 4: field channels is not an object",
        "record 5: field channels: the sms address is not text",
        "record 6: field languages is not a list of codes",
        "record 7: field consent_at 'soon' is invalid",
    ]
    assert len(result["problems"]) == len(expected)
    for message, start in zip(result["problems"], expected, strict=True):
        assert message.startswith(start + "; give "), message
        assert message.count("record ") == 1, message


def test_import_json_webpush_object(engine, tmp_path) -> None:
    tenant = add_tenant(engine)
    subscription = {
        "endpoint": "https://push.example.org/send/abc",
        "keys": {"p256dh": "BPub", "auth": "secret"},
    }
    record = {
        "places": [[40.7128, -74.006]],
        "channels": {"webpush": subscription},
        "consent_at": CONSENT,
        "test_opt_in": "false",
    }
    path = tmp_path / "opt-in.json"
    path.write_text(json.dumps([record]), encoding="utf-8")

    result = import_subscribers(engine, tenant, path)

    assert result["imported"] == 1, result["problems"]
    with unit_of_work(TenantContext(tenant), engine=engine, write=False) as session:
        subscriber = session.scalars(select(m.Subscriber)).one()
    assert subscriber.test_opt_in is False


def test_import_unreadable_files(engine, cli, tmp_path) -> None:
    tenant = add_tenant(engine)
    truncated = tmp_path / "truncated.json"
    truncated.write_text('[{"places": [[40.7, -74.0]]', encoding="utf-8")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(
        CSV_HEADER.encode() + "40.7,-74.0,en,jos\xe9@example.org\n".encode("latin-1")
    )

    huge_field = tmp_path / "huge.csv"
    huge_field.write_text(CSV_HEADER + "40.7,-74.0,en," + "x" * 200_000 + "\n", encoding="utf-8")

    for path, expected in (
        (truncated, f"error: {truncated} is not valid JSON ("),
        (latin1, f"error: {latin1} is not UTF-8 text; save it as UTF-8"),
        (huge_field, f"error: {huge_field}: invalid CSV near line 2 (field larger than"),
    ):
        result = cli("subscribers", "import", str(path), "--tenant", tenant)
        assert result.exit_code == 2, result.output
        assert expected in result.stderr, result.stderr
        assert "Traceback" not in result.output
        as_json = cli("subscribers", "import", str(path), "--tenant", tenant, "--json")
        assert json.loads(as_json.stdout)["error"].startswith(expected.removeprefix("error: "))


def test_import_rejects_place_outside_area(engine, tmp_path) -> None:
    tenant = add_tenant(engine)
    swapped = f"-74.0060,40.7128,en,carla@example.org,,,,false,{CONSENT}\n"
    path = write_csv(tmp_path, ALICE, swapped)

    result = import_subscribers(engine, tenant, path)

    assert result["imported"] == 1
    assert result["skipped"] == 1
    assert len(result["problems"]) == 1
    assert result["problems"][0].startswith("record 3: place 1 is outside the service area")
