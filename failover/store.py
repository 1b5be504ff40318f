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

from sqlalchemy import Connection, bindparam, exists, select, update
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


# Statements are built once per dialect and column set, with bound parameters for every
# value: building them per contact cost more CPU than the database spent running them.
_statements: dict[tuple[str, str, tuple[str, ...]], Any] = {}


def _cached(kind: str, dialect: str, columns: tuple[str, ...], build: Any) -> Any:
    key = (kind, dialect, columns)
    statement = _statements.get(key)
    if statement is None:
        statement = _statements[key] = build()
    return statement


def _value(column_name: str) -> Any:
    # A bound parameter named like its column is reserved by SQLAlchemy in INSERT statements.
    return bindparam(f"value_{column_name}", type_=CONTACTS.c[column_name].type)


def _params(values: dict[str, Any]) -> dict[str, Any]:
    return {f"value_{name}": value for name, value in values.items()}


def _plain_insert(dialect: str, columns: tuple[str, ...]) -> Any:
    module = postgresql if dialect == "postgresql" else sqlite
    return (
        module.insert(CONTACTS)
        .values({name: _value(name) for name in columns})
        .on_conflict_do_nothing(index_elements=["tenant_id", "external_id"])
        .returning(CONTACTS.c.id)
    )


def _take_slot_statement() -> Any:
    return update(AGREEMENTS).where(
        AGREEMENTS.c.id == bindparam("slot_agreement"),
        AGREEMENTS.c.tenant_id == bindparam("slot_tenant"),
        AGREEMENTS.c.open_contacts < bindparam("slot_cap"),
    )


def _take_slot() -> Any:
    return _take_slot_statement().values(open_contacts=AGREEMENTS.c.open_contacts + 1)


def _slot_params(agreement_id: str, tenant_id: str, cap: int) -> dict[str, Any]:
    return {"slot_agreement": agreement_id, "slot_tenant": tenant_id, "slot_cap": cap}


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
    dialect = connection.dialect.name
    if agreement_id is None or share_cap is None:
        columns = tuple(values)
        statement = _cached("insert", dialect, columns, lambda: _plain_insert(dialect, columns))
        inserted = connection.execute(statement, _params(values)).first()
        return StoreResult(stored=inserted is not None, duplicate=inserted is None)

    if dialect == "postgresql":
        return _insert_with_slot_postgres(connection, values, share_cap)

    slot = connection.execute(
        _cached("slot", dialect, (), _take_slot),
        _slot_params(agreement_id, values["tenant_id"], share_cap),
    )
    if slot.rowcount == 0:
        return StoreResult(stored=False, cap_reached=True)
    result = insert_contact(connection, values)
    if result.duplicate:
        release_slot(connection, agreement_id, values["tenant_id"])
    return result


def _slot_insert(columns: tuple[str, ...]) -> Any:
    slot = _take_slot().returning(AGREEMENTS.c.id).cte("slot")
    row = select(*(_value(name) for name in columns)).where(exists(select(slot.c.id)))
    inserted = (
        postgresql.insert(CONTACTS)
        .from_select(list(columns), row)
        .on_conflict_do_nothing(index_elements=["tenant_id", "external_id"])
        .returning(CONTACTS.c.id)
        .cte("inserted")
    )
    return select(exists(select(slot.c.id)), select(inserted.c.id).scalar_subquery())


def _insert_with_slot_postgres(
    connection: Connection, values: dict[str, Any], share_cap: int
) -> StoreResult:
    # One round trip: the UPDATE takes the slot, the INSERT runs only when it did, and the
    # outer SELECT returns both outcomes so a repeated external id can give the slot back.
    tenant_id = values["tenant_id"]
    columns = tuple(values)
    statement = _cached("slot_insert", "postgresql", columns, lambda: _slot_insert(columns))
    took, stored = connection.execute(
        statement, _params(values) | _slot_params(values["agreement_id"], tenant_id, share_cap)
    ).one()
    if not took:
        return StoreResult(stored=False, cap_reached=True)
    if stored is None:
        release_slot(connection, values["agreement_id"], tenant_id)
        return StoreResult(stored=False, duplicate=True)
    return StoreResult(stored=True)
