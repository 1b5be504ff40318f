"""Storing a routed contact with as few statements as possible.

A contact is stored with Core statements, without ORM objects, on a session's connection or,
on PostgreSQL, in a transaction of one round trip of its own (`insert_contact_in_one_round_trip`).
On PostgreSQL one statement stores it, and for a partner route the same statement takes a slot
under the agreement's share cap. The slot is a conditional UPDATE of the agreement's
`open_contacts`, which PostgreSQL serializes per row, so API processes that route at the same
moment cannot together exceed the cap. SQLite runs the same steps as separate statements inside
its single writer transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, exists, select, update
from sqlalchemy.dialects import postgresql, sqlite

from failover.models import Agreement, Contact
from hub.core.db import execute_in_one_round_trip
from hub.core.tenancy import TenantContext

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


def _release_statement() -> Any:
    return update(AGREEMENTS).where(
        AGREEMENTS.c.id == bindparam("slot_agreement"),
        AGREEMENTS.c.tenant_id == bindparam("slot_tenant"),
        AGREEMENTS.c.open_contacts > 0,
    )


def _take_slot() -> Any:
    return _take_slot_statement().values(open_contacts=AGREEMENTS.c.open_contacts + 1)


def _take_slot_returning() -> Any:
    return _take_slot().returning(AGREEMENTS.c.id)


def _slot_params(agreement_id: str, tenant_id: str, cap: int) -> dict[str, Any]:
    return {"slot_agreement": agreement_id, "slot_tenant": tenant_id, "slot_cap": cap}


class _Runner:
    """Runs the store's statements on a SQLAlchemy connection."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.dialect = connection.dialect.name

    def first(self, statement: Any, params: dict[str, Any]) -> Any:
        return self.connection.execute(statement, params).first()

    def execute(self, statement: Any, params: dict[str, Any]) -> None:
        self.connection.execute(statement, params)


# Statement -> its SQL text for psycopg, compiled once.
_compiled: dict[Any, Any] = {}
_PSYCOPG = postgresql.psycopg.dialect()


class _RoundTripRunner:
    """Runs the same statements on PostgreSQL, each in a transaction of one round trip
    (`execute_in_one_round_trip`), for a contact stored outside a session."""

    dialect = "postgresql"

    def __init__(self, engine: Engine, scope: TenantContext) -> None:
        self.engine = engine
        self.scope = scope

    def _run(self, statement: Any, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        compiled = _compiled.get(statement)
        if compiled is None:
            compiled = _compiled[statement] = statement.compile(dialect=_PSYCOPG)
        return execute_in_one_round_trip(
            self.scope, compiled.string, compiled.construct_params(params), engine=self.engine
        )

    def first(self, statement: Any, params: dict[str, Any]) -> Any:
        rows = self._run(statement, params)
        return rows[0] if rows else None

    def execute(self, statement: Any, params: dict[str, Any]) -> None:
        self._run(statement, params)


def _release() -> Any:
    return _release_statement().values(open_contacts=AGREEMENTS.c.open_contacts - 1)


def release_slot(connection: Connection, agreement_id: str, tenant_id: str) -> None:
    """Give back the slot of a partner contact that is no longer waiting or claimed."""
    _release_slot(_Runner(connection), agreement_id, tenant_id)


def _release_slot(runner: _Runner | _RoundTripRunner, agreement_id: str, tenant_id: str) -> None:
    runner.execute(
        _cached("release", runner.dialect, (), _release),
        {"slot_agreement": agreement_id, "slot_tenant": tenant_id},
    )


def insert_contact(
    connection: Connection, values: dict[str, Any], *, share_cap: int | None = None
) -> StoreResult:
    """Insert one contact row; for a partner route, first take a slot under `share_cap`.

    `values` contains every column of the row. A repeated `(tenant_id, external_id)` stores
    nothing and returns `duplicate`, and a slot taken for it is given back.
    """
    return _insert(_Runner(connection), values, share_cap)


def insert_contact_in_one_round_trip(
    engine: Engine, scope: TenantContext, values: dict[str, Any], *, share_cap: int | None = None
) -> StoreResult:
    """`insert_contact` in a transaction of its own on PostgreSQL, in one round trip.

    A repeated external id takes no share-cap slot. Only a repeat sent while the first
    contact's transaction is still open takes one, and gives it back in a second transaction.
    """
    return _insert(_RoundTripRunner(engine, scope), values, share_cap)


def _insert(
    runner: _Runner | _RoundTripRunner, values: dict[str, Any], share_cap: int | None
) -> StoreResult:
    agreement_id = values.get("agreement_id")
    dialect = runner.dialect
    if agreement_id is None or share_cap is None:
        columns = tuple(values)
        statement = _cached("insert", dialect, columns, lambda: _plain_insert(dialect, columns))
        inserted = runner.first(statement, _params(values))
        return StoreResult(stored=inserted is not None, duplicate=inserted is None)

    tenant_id = values["tenant_id"]
    slot_params = _slot_params(agreement_id, tenant_id, share_cap)
    if dialect == "postgresql":
        # One round trip: the UPDATE takes the slot unless the external id is already stored,
        # and the INSERT runs only when it took it. A repeat that races the first contact's
        # transaction takes a slot, finds the conflict, and gives the slot back below.
        columns = tuple(values)
        statement = _cached("slot_insert", dialect, columns, lambda: _slot_insert(columns))
        took, stored, repeated = runner.first(statement, _params(values) | slot_params)
        if repeated:
            return StoreResult(stored=False, duplicate=True)
        if not took:
            return StoreResult(stored=False, cap_reached=True)
        result = StoreResult(stored=stored is not None, duplicate=stored is None)
    else:
        slot = runner.first(_cached("slot", dialect, (), _take_slot_returning), slot_params)
        if slot is None:
            return StoreResult(stored=False, cap_reached=True)
        result = _insert(runner, values, None)
    if result.duplicate:
        _release_slot(runner, agreement_id, tenant_id)
    return result


def _slot_insert(columns: tuple[str, ...]) -> Any:
    repeated = exists().where(
        CONTACTS.c.tenant_id == _value("tenant_id"),
        CONTACTS.c.external_id == _value("external_id"),
    )
    slot = _take_slot().where(~repeated).returning(AGREEMENTS.c.id).cte("slot")
    row = select(*(_value(name) for name in columns)).where(exists(select(slot.c.id)))
    inserted = (
        postgresql.insert(CONTACTS)
        .from_select(list(columns), row)
        .on_conflict_do_nothing(index_elements=["tenant_id", "external_id"])
        .returning(CONTACTS.c.id)
        .cte("inserted")
    )
    return select(exists(select(slot.c.id)), select(inserted.c.id).scalar_subquery(), repeated)
