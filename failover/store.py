"""Storing a routed contact with as few statements as possible.

A contact is stored with Core statements on the session's connection, without ORM objects:
on PostgreSQL one statement stores it, and for a partner route the same statement takes a slot
under the agreement's share cap. The slot is a conditional UPDATE of the agreement's
`open_contacts`, which PostgreSQL serializes per row, so API processes that route at the same
moment cannot together exceed the cap. SQLite runs the same steps as separate statements inside
its single writer transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, exists, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite

from failover.models import Agreement, Contact

CONTACTS = Contact.__table__
AGREEMENTS = Agreement.__table__


@dataclass(frozen=True)
class StoreResult:
    """The outcome of one insert: stored, a repeated external id, or the share cap reached."""

    stored: bool
    duplicate: bool = False
    cap_reached: bool = False


def _insert(connection: Connection) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(CONTACTS)


def _take_slot(agreement_id: str, tenant_id: str, cap: int) -> Any:
    return (
        update(AGREEMENTS)
        .where(
            AGREEMENTS.c.id == agreement_id,
            AGREEMENTS.c.tenant_id == tenant_id,
            AGREEMENTS.c.open_contacts < cap,
        )
        .values(open_contacts=AGREEMENTS.c.open_contacts + 1)
    )


def release_slot(connection: Connection, agreement_id: str, tenant_id: str) -> None:
    """Give back the slot of a partner contact that is no longer waiting or claimed."""
    connection.execute(
        update(AGREEMENTS)
        .where(
            AGREEMENTS.c.id == agreement_id,
            AGREEMENTS.c.tenant_id == tenant_id,
            AGREEMENTS.c.open_contacts > 0,
        )
        .values(open_contacts=AGREEMENTS.c.open_contacts - 1)
    )


def insert_contact(
    connection: Connection, values: dict[str, Any], *, share_cap: int | None = None
) -> StoreResult:
    """Insert one contact row; for a partner route, first take a slot under `share_cap`.

    `values` contains every column of the row. A repeated `(tenant_id, external_id)` stores
    nothing and returns `duplicate`, and a slot taken for it is given back.
    """
    agreement_id = values.get("agreement_id")
    if agreement_id is None or share_cap is None:
        inserted = connection.execute(
            _insert(connection)
            .values(values)
            .on_conflict_do_nothing(index_elements=["tenant_id", "external_id"])
            .returning(CONTACTS.c.id)
        ).first()
        return StoreResult(stored=inserted is not None, duplicate=inserted is None)

    if connection.dialect.name == "postgresql":
        return _insert_with_slot_postgres(connection, values, share_cap)

    slot = connection.execute(_take_slot(agreement_id, values["tenant_id"], share_cap))
    if slot.rowcount == 0:
        return StoreResult(stored=False, cap_reached=True)
    result = insert_contact(connection, values)
    if result.duplicate:
        release_slot(connection, agreement_id, values["tenant_id"])
    return result


def _insert_with_slot_postgres(
    connection: Connection, values: dict[str, Any], share_cap: int
) -> StoreResult:
    # One round trip: the UPDATE takes the slot, the INSERT runs only when it did, and the
    # outer SELECT returns both outcomes so a repeated external id can give the slot back.
    tenant_id = values["tenant_id"]
    slot = (
        _take_slot(values["agreement_id"], tenant_id, share_cap)
        .returning(AGREEMENTS.c.id)
        .cte("slot")
    )
    columns = list(values)
    row = select(*(literal(values[name], CONTACTS.c[name].type) for name in columns)).where(
        exists(select(slot.c.id))
    )
    inserted = (
        postgresql.insert(CONTACTS)
        .from_select(columns, row)
        .on_conflict_do_nothing(index_elements=["tenant_id", "external_id"])
        .returning(CONTACTS.c.id)
        .cte("inserted")
    )
    took, stored = connection.execute(
        select(exists(select(slot.c.id)), select(inserted.c.id).scalar_subquery())
    ).one()
    if not took:
        return StoreResult(stored=False, cap_reached=True)
    if stored is None:
        release_slot(connection, values["agreement_id"], tenant_id)
        return StoreResult(stored=False, duplicate=True)
    return StoreResult(stored=True)
