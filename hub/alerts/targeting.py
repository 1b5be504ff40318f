"""Find the subscribers whose places fall in an alert's area: one indexed query per chunk.

The area's cells come at three resolutions (see `hub.alerts.cells`); each resolution has its
own index on `alert_subscriber_cells`, and the query ORs three `IN` lists. Very large cell sets
are split into chunks so a statement stays within the database's parameter limits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, String, bindparam, cast, false, func, or_, select
from sqlalchemy.orm import Session

from hub.alerts.cells import CellSet
from hub.alerts.models import Subscriber, SubscriberCell, SubscriberChannel
from tenants.languages import language_key


def address_of(channel: Any) -> ColumnElement[int]:
    """Return the address of a channel row (the `SubscriberChannel` entity or an alias of it),
    the same for every subscriber's row of one channel and address (`address_key`). An alert
    sends one message per address and language list."""
    return func.coalesce(channel.address_key, channel.id)


# SQLite allows 32,766 bound parameters per statement; PostgreSQL allows 65,535.
_CHUNK = 30_000


@dataclass(frozen=True)
class Recipient:
    subscriber_id: str
    languages: tuple[str, ...]
    channel: str
    channel_row_id: int


def _chunks(cells: CellSet) -> Iterator[tuple[list[int], list[int], list[int]]]:
    fine, medium, coarse = sorted(cells.fine), sorted(cells.medium), sorted(cells.coarse)
    total = len(fine) + len(medium) + len(coarse)
    if total == 0:
        return
    for start in range(0, max(len(fine), len(medium), len(coarse)), _CHUNK // 3):
        end = start + _CHUNK // 3
        yield fine[start:end], medium[start:end], coarse[start:end]


def subscriber_ids_in(session: Session, cells: CellSet) -> set[str]:
    """Return the ids of subscribers with a place in `cells` (the session's tenant only)."""
    found: set[str] = set()
    for fine, medium, coarse in _chunks(cells):
        conditions = []
        if fine:
            conditions.append(SubscriberCell.cell_fine.in_(fine))
        if medium:
            conditions.append(SubscriberCell.cell_medium.in_(medium))
        if coarse:
            conditions.append(SubscriberCell.cell_coarse.in_(coarse))
        if not conditions:
            continue
        found.update(session.scalars(select(SubscriberCell.subscriber_id).where(or_(*conditions))))
    return found


def recipients(
    session: Session,
    subscriber_ids: Iterable[str],
    *,
    test_only: bool,
) -> list[Recipient]:
    """Return one recipient per active channel of the given active subscribers, and per
    address and language list as `recipient_rows` selects them.

    With `test_only`, only subscribers who opted in to test messages are returned (Exercise
    and Test alerts).
    """
    ids = sorted(set(subscriber_ids))
    chosen: dict[tuple[str, int, tuple[str, ...]], Recipient] = {}
    for start in range(0, len(ids), _CHUNK):
        query = (
            select(
                Subscriber.id,
                Subscriber.languages,
                SubscriberChannel.channel,
                SubscriberChannel.id,
                address_of(SubscriberChannel),
            )
            .join(SubscriberChannel, SubscriberChannel.subscriber_id == Subscriber.id)
            .where(
                Subscriber.id.in_(ids[start : start + _CHUNK]),
                Subscriber.active.is_(True),
                SubscriberChannel.active.is_(True),
                # The join is explicit, so the tenant filter on the joined table is too.
                SubscriberChannel.tenant_id == Subscriber.tenant_id,
            )
        )
        if test_only:
            query = query.where(Subscriber.test_opt_in.is_(True))
        for subscriber_id, languages, channel, channel_row_id, address in session.execute(query):
            recipient = Recipient(subscriber_id, tuple(languages or ()), channel, channel_row_id)
            # Rows stored before opt-ins canonicalized the case of tags may differ only in case.
            key = (channel, address, tuple(language_key(tag) for tag in recipient.languages))
            if key not in chosen or subscriber_id < chosen[key].subscriber_id:
                chosen[key] = recipient
    return sorted(chosen.values(), key=lambda r: (r.subscriber_id, r.channel))


def area_condition(cells: CellSet) -> ColumnElement[bool]:
    """Return the condition "a place of the row is in `cells`" on `alert_subscriber_cells`.

    The cell lists are rendered as literals, so no parameter limit applies.
    """
    conditions = []
    for column, values in (
        (SubscriberCell.cell_fine, cells.fine),
        (SubscriberCell.cell_medium, cells.medium),
        (SubscriberCell.cell_coarse, cells.coarse),
    ):
        if values:
            parameter = bindparam(None, sorted(values), expanding=True, literal_execute=True)
            conditions.append(column.in_(parameter))
    return or_(*conditions) if conditions else false()


def recipient_rows(tenant_id: str, subscriber_ids: Select[Any], *, test_only: bool) -> Select[Any]:
    """Select (subscriber id, channel, channel row id) of the active channels of the active
    subscribers in `subscriber_ids`, one tenant only, one row per address and language list.

    Subscribers who gave the same address (rows linked by `SubscriberChannel.address_key`)
    and the same languages, compared without regard to case, get one message between them,
    from the subscriber with the lowest id. Subscribers of one address with different
    languages each get theirs.
    """
    rank = func.row_number().over(
        partition_by=(
            SubscriberChannel.channel,
            address_of(SubscriberChannel),
            # Lower case, so language lists stored before opt-ins canonicalized the case of
            # tags compare as the tags do. The JSON text of a list of tags has no escapes.
            func.lower(cast(Subscriber.languages, String)),
        ),
        order_by=Subscriber.id,
    )
    query = (
        select(
            Subscriber.id.label("subscriber_id"),
            SubscriberChannel.channel.label("channel"),
            SubscriberChannel.id.label("channel_row_id"),
            rank.label("rank"),
        )
        .join(SubscriberChannel, SubscriberChannel.subscriber_id == Subscriber.id)
        .where(
            Subscriber.tenant_id == tenant_id,
            SubscriberChannel.tenant_id == tenant_id,
            Subscriber.id.in_(subscriber_ids),
            Subscriber.active.is_(True),
            SubscriberChannel.active.is_(True),
        )
    )
    if test_only:
        query = query.where(Subscriber.test_opt_in.is_(True))
    ranked = query.subquery()
    return select(ranked.c.subscriber_id, ranked.c.channel, ranked.c.channel_row_id).where(
        ranked.c.rank == 1
    )
