"""Database engine, sessions and central tenant enforcement.

Two mechanisms keep one tenant's session from reaching another tenant's rows:

1. SQLAlchemy `do_orm_execute` adds `with_loader_criteria(TenantOwned, tenant_id == ...)` to
   every ORM SELECT, UPDATE and DELETE issued by a tenant session, and `before_flush` rejects
   new or changed rows whose `tenant_id` differs from the session's tenant.
2. On PostgreSQL every transaction starts with `set_config('app.tenant_id', ..., true)` and
   `set_config('role', 'hub_app', true)`, the equivalents of `SET LOCAL`, so row-level
   security policies apply even to hand-written SQL. Plain `SET` is never used because pooled
   connections would carry one tenant's setting into the next transaction.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import structlog
from sqlalchemy import JSON, DateTime, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker, with_loader_criteria
from sqlalchemy.pool import NullPool

from hub.core.errors import Forbidden
from hub.core.settings import Settings, create_private_file, get_settings
from hub.core.tenancy import SystemContext, TenantContext, TenantOwned

log = structlog.get_logger(__name__)

# Role the application switches to inside each PostgreSQL transaction, so row-level security
# applies even when the connecting user owns the tables. Created by the first migration.
RLS_ROLE = "hub_app"
# Value of `app.tenant_id` that the policies treat as "all tenants", used by SystemContext only.
SYSTEM_TENANT = "*"


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class HubSession(Session):
    """The hub's session class. The tenant listeners below are attached to it alone, so other
    libraries' sessions in the same process (kombu's SQLAlchemy transport) are unaffected."""


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling is switched off so that the `begin` listener
        # below decides between deferred and immediate transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when
        # another writer committed in between; writers therefore take the lock up front.
        write = connection.get_execution_options().get("sqlite_write", True)
        mode = "IMMEDIATE" if write else "DEFERRED"
        connection.exec_driver_sql(f"BEGIN {mode}")


CONNECT_TIMEOUT_SECONDS = 5


def get_engine(url: str | None = None, settings: Settings | None = None) -> Engine:
    """Return the process-wide engine for `url` (default: the configured database)."""
    settings = settings or get_settings()
    url = url or settings.effective_database_url
    with _engines_lock:
        engine = _engines.get(url)
        if engine is not None:
            return engine

        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            if parsed.database:
                settings.ensure_var_dir()
            engine = create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": 30},
                poolclass=NullPool if parsed.database in (None, "", ":memory:") else None,
            )
            _configure_sqlite(engine)
        else:
            # No pre-ping: it costs a round trip on every checkout, the busiest path there is.
            # A connection that died with the server fails its first statement instead. The
            # API returns 503 for that one call and SQLAlchemy then discards every pooled
            # connection of the old server. Recycling bounds how long an idle connection is
            # trusted across firewalls and proxies that drop quiet sessions.
            engine = create_engine(
                url,
                pool_size=10,
                max_overflow=20,
                pool_recycle=600,
                # An unreachable server fails a new connection after this many seconds
                # instead of waiting for the operating system's TCP timeout.
                connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
            )
        _engines[url] = engine
        return engine


def dispose_engines(*, close: bool = True) -> None:
    """Drop every engine's pooled connections (at shutdown, between tests, after a fork).

    After a fork, pass `close=False`: the parent still uses the inherited connections, and
    closing them in the child would end the parent's sessions on the server. The child then
    opens connections of its own, as SQLAlchemy's pooling documentation prescribes.
    """
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose(close=close)
        _engines.clear()
        _session_factories.clear()
        _read_only_binds.clear()


def can_match_text(value: str) -> bool:
    """Return whether `value` can equal a stored text value.

    PostgreSQL rejects a text parameter that contains a NUL character with an error, so a
    lookup by such a value from a client must return nothing without a query. The ids, tokens,
    codes and jurisdiction ids that the hub generates or reads from manifests contain no NUL.
    """
    return "\x00" not in value


def is_postgres(bind: Engine | Session | Any) -> bool:
    engine = bind.get_bind() if isinstance(bind, Session) else bind
    return engine.dialect.name == "postgresql"


def read_one_snapshot(session: Session) -> None:
    """Make every statement of the session's next transaction read one snapshot.

    On PostgreSQL the transaction runs at REPEATABLE READ, because under the default READ
    COMMITTED each statement reads the rows committed when it starts, so a reader that joins
    several queries can see a concurrent commit in some of them only. Call it before the
    session's first statement: a transaction already begun keeps its level. SQLite needs
    nothing, because a transaction there reads one snapshot already.
    """
    if is_postgres(session) and not session.in_transaction():
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def advisory_xact_lock(
    session: Session, lock_class: int, key: str, *, shared: bool = False
) -> None:
    """Wait for the PostgreSQL advisory lock (`lock_class`, hash of `key`) and hold it until the
    session's transaction ends. Two keys with the same hash share a lock, so one only waits longer.
    A `shared` lock waits only for an exclusive holder, and any number of sessions hold it.

    On SQLite this does nothing, because a writing transaction already holds the database's
    write lock from its BEGIN IMMEDIATE. A read-only SQLite transaction (`write=False`) holds
    no lock there.
    """
    if is_postgres(session):
        function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        session.execute(
            text(f"SELECT {function}(:lock_class, hashtext(:key))"),
            {"lock_class": lock_class, "key": key},
        )


_session_factories: dict[str, sessionmaker[HubSession]] = {}


def _factory(engine: Engine) -> sessionmaker[HubSession]:
    key = str(engine.url)
    factory = _session_factories.get(key)
    if factory is None:
        factory = sessionmaker(
            bind=engine, class_=HubSession, expire_on_commit=False, autoflush=True
        )
        _session_factories[key] = factory
    return factory


_read_only_binds: dict[str, Engine] = {}


def _read_only_bind(engine: Engine) -> Engine:
    """Return a view of a SQLite engine whose transactions begin deferred (readers only)."""
    key = str(engine.url)
    bind = _read_only_binds.get(key)
    if bind is None:
        bind = engine.execution_options(sqlite_write=False)
        _read_only_binds[key] = bind
    return bind


def _scope_of(session: Session) -> TenantContext | SystemContext | None:
    return session.info.get("scope")


@event.listens_for(HubSession, "do_orm_execute")
def _restrict_to_tenant(state: Any) -> None:
    scope = _scope_of(state.session)
    if isinstance(scope, SystemContext):
        return
    if scope is None:
        raise Forbidden("database session has no tenant scope", code="no_tenant_scope")
    if state.is_select or state.is_update or state.is_delete:
        tenant_id = scope.tenant_id
        state.statement = state.statement.options(
            with_loader_criteria(
                TenantOwned,
                lambda cls: cls.tenant_id == tenant_id,
                include_aliases=True,
                track_closure_variables=False,
            )
        )


def readable_tenant(session: Session, tenant_id: str) -> str | None:
    """Return `tenant_id` when the session's scope may read that tenant's rows, else None.

    A few hot reads run as Core statements on the session's connection, so the ORM's tenant
    criteria do not apply to them. They filter on the tenant this returns and read nothing for
    None, so they see what an ORM query in the same session would see.
    """
    scope = _scope_of(session)
    if isinstance(scope, SystemContext):
        return tenant_id
    if scope is None:
        raise Forbidden("database session has no tenant scope", code="no_tenant_scope")
    return tenant_id if scope.tenant_id == tenant_id else None


@event.listens_for(HubSession, "before_flush")
def _check_tenant_on_write(session: Session, _flush_context: Any, _instances: Any) -> None:
    scope = _scope_of(session)
    if isinstance(scope, SystemContext):
        return
    for obj in list(session.new) + list(session.dirty):
        if not isinstance(obj, TenantOwned):
            continue
        if scope is None:
            raise Forbidden("database session has no tenant scope", code="no_tenant_scope")
        if obj.tenant_id is None:
            obj.tenant_id = scope.tenant_id
        elif obj.tenant_id != scope.tenant_id:
            raise Forbidden("row belongs to another tenant", code="cross_tenant_write")


_SCOPE_SQL = (
    "SELECT set_config('app.tenant_id', %(tenant)s, true), set_config('role', %(role)s, true)"
)


def _scope_params(scope: TenantContext | SystemContext | None) -> dict[str, str]:
    tenant = scope.tenant_id if isinstance(scope, TenantContext) else SYSTEM_TENANT
    return {"tenant": tenant, "role": RLS_ROLE}


@event.listens_for(Engine, "do_connect")
def _create_sqlite_file_private(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> None:
    """Create a SQLite database file 0600 before SQLite opens it.

    SQLite would create it readable by everyone, and it gives the -wal and -shm files the
    database file's mode. The event fires for every engine of the process, so the embedded
    broker's file (kombu's SQLAlchemy transport) is covered too. An existing file keeps its
    mode.
    """
    if dialect.name != "sqlite":
        return
    database = cargs[0] if cargs else cparams.get("database")
    if not isinstance(database, str) or database in ("", ":memory:"):
        return
    if database.startswith("file:"):
        return  # a URI filename, which the hub does not use for its files
    create_private_file(Path(database))


@event.listens_for(HubSession, "after_begin")
def _set_local_tenant(session: Session, _transaction: Any, connection: Any) -> None:
    if connection.dialect.name != "postgresql":
        return
    connection.exec_driver_sql(_SCOPE_SQL, _scope_params(_scope_of(session)))


def _in_one_round_trip(statement: str, scope_sql: str = _SCOPE_SQL) -> str:
    return f"BEGIN; {scope_sql}; {statement}; COMMIT"


# The scope of an `AsyncReader` transaction, with its statement timeout.
_READ_SCOPE_SQL = f"{_SCOPE_SQL}, set_config('statement_timeout', %(statement_timeout)s, true)"
# How long an `AsyncReader` statement may run. The reader's connections serve every call of
# their event loop, so one read held up, for example by a migration's lock, would hold up all
# of them. Such a read fails with 503 instead.
READ_STATEMENT_TIMEOUT_MS = 5000


def _skip_to_statement(cursor: psycopg.ClientCursor | psycopg.AsyncClientCursor) -> None:
    # The results come in order: BEGIN, the scope, the statement, COMMIT.
    cursor.nextset()
    cursor.nextset()


def execute_in_one_round_trip(
    scope: TenantContext, statement: str, params: dict[str, Any], *, engine: Engine
) -> list[tuple[Any, ...]]:
    """Run one statement in a transaction of its own on PostgreSQL; return its rows.

    For the few hot paths that write one row and need no ORM. BEGIN, the tenant scope (the
    same `set_config` calls as every session), the statement and COMMIT travel to the server
    as one query string. The transaction costs one round trip, where a session spends one
    each on BEGIN, the scope, the statement and COMMIT. The values are bound on the client by
    psycopg's `ClientCursor`, which quotes them as SQL literals, and `statement` uses its
    `%(name)s` placeholders. Row-level security applies as in a session; the ORM's loader
    criteria do not, so `statement` names the scope's tenant itself. When the statement fails
    the server skips the COMMIT, and the transaction is rolled back here. Database errors
    surface as SQLAlchemy's, so the API handles them as it handles a session's.
    """
    try:
        # Unlike `Engine.connect`, a raw checkout passes the driver's error through.
        pooled = engine.raw_connection()
    except psycopg.Error as exc:
        raise _translated(exc) from exc
    connection = pooled.driver_connection
    try:
        # psycopg would otherwise send a BEGIN of its own, in a round trip of its own.
        connection.autocommit = True
        cursor = psycopg.ClientCursor(connection)
        cursor.execute(_in_one_round_trip(statement), {**_scope_params(scope), **params})
        _skip_to_statement(cursor)
        rows = cursor.fetchall() if cursor.description else []
        return rows
    except psycopg.Error as exc:
        _discard_after(engine, pooled, exc)
        raise _translated(exc) from exc
    except BaseException:
        _discard_after(engine, pooled, None)
        raise
    finally:
        if pooled.is_valid:
            connection.autocommit = False
        pooled.close()


def _discard_after(engine: Engine, pooled: Any, exc: BaseException | None) -> None:
    """Roll back after a failed one-round-trip transaction. After a lost server, drop the pool
    instead, as SQLAlchemy does when a session's statement finds the server gone."""
    if isinstance(exc, psycopg.Error) and engine.dialect.is_disconnect(exc, pooled, None):
        pooled.invalidate(exc)
        engine.dispose(close=False)
        return
    try:
        # In autocommit mode psycopg's own rollback() sends nothing, so the failed
        # transaction block is ended with an explicit ROLLBACK.
        pooled.driver_connection.execute("ROLLBACK")
    except psycopg.Error as rollback_error:
        pooled.invalidate(rollback_error)


class AsyncReader:
    """Read statements in one round trip each, on asyncio connections of one event loop.

    The hot reads that an endpoint batches run here instead of blocking the event loop for
    their round trip. Each call is a transaction of its own like `execute_in_one_round_trip`:
    BEGIN, the tenant scope, the statement and COMMIT in one query string, with row-level
    security, and a statement timeout. At most `size` calls are in flight, each on its own
    connection, and the connections stay open for the next call until `aclose`. Errors surface
    as SQLAlchemy's, as in a session. Get one with `async_reader`.
    """

    def __init__(
        self, engine: Engine, *, size: int, statement_timeout_ms: int = READ_STATEMENT_TIMEOUT_MS
    ) -> None:
        _args, params = engine.dialect.create_connect_args(engine.url)
        # SQLAlchemy's adapters serve its own statements, so these reads use psycopg's defaults.
        params.pop("context", None)
        self._connect_params = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, **params}
        self.size = size
        self._timeout = {"statement_timeout": str(statement_timeout_ms)}
        self._slots = asyncio.Semaphore(size)
        self._idle: list[psycopg.AsyncConnection[Any]] = []

    async def fetch(
        self, scope: TenantContext, statement: str, params: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        """Run `statement`, with `%(name)s` placeholders, for `scope` and return its rows."""
        async with self._slots:
            connection = self._idle.pop() if self._idle else await self._connect()
            try:
                cursor = psycopg.AsyncClientCursor(connection)
                await cursor.execute(
                    _in_one_round_trip(statement, _READ_SCOPE_SQL),
                    {**_scope_params(scope), **self._timeout, **params},
                )
                _skip_to_statement(cursor)
                rows = await cursor.fetchall() if cursor.description else []
            except psycopg.Error as exc:
                await self._recover(connection)
                raise _translated(exc) from exc
            except BaseException:
                await connection.close()
                raise
            self._idle.append(connection)
            return rows

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        try:
            return await psycopg.AsyncConnection.connect(autocommit=True, **self._connect_params)
        except psycopg.Error as exc:
            raise _translated(exc) from exc

    async def _recover(self, connection: psycopg.AsyncConnection[Any]) -> None:
        """Keep a connection whose statement failed, after ending its transaction. When the
        connection broke, close it and the idle ones too: they went to the same server, as
        SQLAlchemy's pool assumes when it drops every connection after a disconnect."""
        if not connection.broken and not connection.closed:
            try:
                await connection.execute("ROLLBACK")
                self._idle.append(connection)
                return
            except psycopg.Error:
                pass
        await connection.close()
        await self.aclose()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.close()


# One reader per event loop and database: asyncio connections belong to the loop that opened them.
_async_readers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Engine, AsyncReader]] = (
    weakref.WeakKeyDictionary()
)
# Connections per reader. Under the intake benchmark's GET load (2 processes, 32 clients) one
# gave 4,389 to 4,491 GET/s and two 3,330 to 3,741. The event loop is the bottleneck there, and
# with one query in flight the GETs that arrive during it share the next query.
ASYNC_READ_CONNECTIONS = 1


def async_reader(engine: Engine) -> AsyncReader:
    """Return the running event loop's reader for `engine` (PostgreSQL only)."""
    readers = _async_readers.setdefault(asyncio.get_running_loop(), {})
    # Keyed by the engine itself: rendering its URL for a key cost more than the lookup.
    reader = readers.get(engine)
    if reader is None:
        reader = readers[engine] = AsyncReader(engine, size=ASYNC_READ_CONNECTIONS)
    return reader


async def close_async_readers() -> None:
    """Close the running event loop's reader connections (at application shutdown)."""
    readers = _async_readers.pop(asyncio.get_running_loop(), {})
    for reader in readers.values():
        await reader.aclose()


def _translated(exc: psycopg.Error) -> Exception:
    if isinstance(exc, psycopg.OperationalError):
        return OperationalError(None, None, exc)
    if isinstance(exc, psycopg.IntegrityError):
        return IntegrityError(None, None, exc)
    return DBAPIError(None, None, exc)


def open_session(
    scope: TenantContext | SystemContext, *, engine: Engine | None = None, write: bool = True
) -> Session:
    """Open a session bound to one tenant (or to the system scope). The caller closes it."""
    engine = engine or get_engine()
    bind = engine
    if engine.dialect.name == "sqlite" and not write:
        bind = _read_only_bind(engine)
    session = _factory(engine)(bind=bind)
    session.info["scope"] = scope
    session.info["engine"] = engine
    if isinstance(scope, SystemContext):
        log.debug("system_session_opened", reason=scope.reason)
    return session


def engine_of(session: Session) -> Engine:
    """Return the engine `session` was opened on, for work in a transaction of its own. On
    SQLite a read-only session's bind is a view of it that only reads."""
    engine = session.info.get("engine")
    return engine if isinstance(engine, Engine) else session.get_bind()


@contextmanager
def unit_of_work(
    scope: TenantContext | SystemContext, *, engine: Engine | None = None, write: bool = True
) -> Iterator[Session]:
    """Run one transaction: commit when the block succeeds, roll back when it raises.

    This is the only place that commits. Services and repositories only flush.
    """
    session = open_session(scope, engine=engine, write=write)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
