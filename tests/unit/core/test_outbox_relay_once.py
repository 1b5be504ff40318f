"""One relay round: publish in order, mark what went out, count the failed attempt."""

from __future__ import annotations

from sqlalchemy import select

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
