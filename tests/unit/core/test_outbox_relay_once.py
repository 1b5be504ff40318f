"""One relay round: publish in order, mark what went out, count the failed attempt."""

from __future__ import annotations

from sqlalchemy import select

from hub.core import outbox
from hub.core.db import get_engine, unit_of_work
from hub.core.outbox import OutboxMessage, enqueue, relay_once
from hub.core.tenancy import SystemContext


def _add(engine, count: int) -> list[int]:
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        messages = [
            enqueue(session, "test.task", queue="intake", tenant_id=None, item_id=f"m{i}")
            for i in range(count)
        ]
        session.flush()
        return [message.id for message in messages]


def _rows(engine, ids: list[int]) -> dict[int, tuple]:
    with unit_of_work(SystemContext("test"), engine=engine, write=False) as session:
        rows = session.execute(
            select(OutboxMessage.id, OutboxMessage.published_at, OutboxMessage.attempts).where(
                OutboxMessage.id.in_(ids)
            )
        ).all()
    return {row.id: (row.published_at is not None, row.attempts) for row in rows}


def test_failed_publish_keeps_later_rows(db_url):
    engine = get_engine(db_url)
    # Other tests may have left due messages in a shared database; publish those first.
    relay_once(lambda message: None, engine=engine)
    first, second, third = _add(engine, 3)
    ours = {first, second, third}
    sent: list[tuple[int, str, str, dict]] = []

    def failing_on_second(message) -> None:
        if message.id == second:
            raise ConnectionError("broker down")
        sent.append((message.id, message.task, message.queue, message.kwargs))

    # Delayed messages of other tests can fall due after the first round and go out too, so
    # the count is checked against what was sent and the rest against this test's rows.
    assert relay_once(failing_on_second, engine=engine) == len(sent)
    assert [item for item in sent if item[0] in ours] == [
        (first, "test.task", "intake", {"item_id": "m0"})
    ]
    assert _rows(engine, [first, second, third]) == {
        first: (True, 0),
        second: (False, 1),
        third: (False, 0),
    }

    retried: list[int] = []
    assert relay_once(lambda message: retried.append(message.id), engine=engine) == len(retried)
    assert [message_id for message_id in retried if message_id in ours] == [second, third]
    assert _rows(engine, [first, second, third]) == {
        first: (True, 0),
        second: (True, 1),
        third: (True, 0),
    }


def _add_lists(engine, task: str, rows: list[tuple[str | None, list[str]]]) -> list[int]:
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        messages = [
            enqueue(session, task, queue="intake", tenant_id=tenant_id, item_ids=items)
            for tenant_id, items in rows
        ]
        session.flush()
        return [message.id for message in messages]


def test_mergeable_messages_go_out_as_one(db_url, monkeypatch):
    engine = get_engine(db_url)
    relay_once(lambda message: None, engine=engine)
    monkeypatch.setattr(outbox, "_MERGEABLE", {"test.lists": "item_ids"})
    monkeypatch.setattr(outbox, "MAX_MERGED_ITEMS", 4)
    first, second = _add_lists(engine, "test.lists", [("a", ["r1", "r2"]), ("b", ["r3"])])
    [single] = _add(engine, 1)
    third, fourth, fifth = _add_lists(
        engine, "test.lists", [("a", ["r4"]), ("b", ["r5"]), ("a", ["r6", "r7"])]
    )
    ours = {first, second, single, third, fourth, fifth}
    sent: list[tuple[int, str, dict]] = []

    def record(message) -> None:
        sent.append((message.id, message.task, message.kwargs))

    relay_once(record, engine=engine)

    # Tenant a's first two rows fill a message of four items; its third row starts another.
    assert [item for item in sent if item[0] in ours] == [
        (first, "test.lists", {"tenant_id": "a", "item_ids": ["r1", "r2", "r4"]}),
        (second, "test.lists", {"tenant_id": "b", "item_ids": ["r3", "r5"]}),
        (single, "test.task", {"item_id": "m0"}),
        (fifth, "test.lists", {"tenant_id": "a", "item_ids": ["r6", "r7"]}),
    ]
    assert _rows(engine, list(ours)) == {row_id: (True, 0) for row_id in ours}


def test_failed_merged_message_counts_each_row(db_url, monkeypatch):
    engine = get_engine(db_url)
    relay_once(lambda message: None, engine=engine)
    monkeypatch.setattr(outbox, "_MERGEABLE", {"test.lists": "item_ids"})
    first, second = _add_lists(engine, "test.lists", [("a", ["r1"]), ("a", ["r2"])])

    def failing(message) -> None:
        if message.id == first:
            raise ConnectionError("broker down")

    relay_once(failing, engine=engine)

    assert _rows(engine, [first, second]) == {first: (False, 1), second: (False, 1)}
