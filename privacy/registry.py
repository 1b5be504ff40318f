"""Tables whose columns hold field ciphertexts, registered by the features that own them.

`privacy` must not import the features, so each feature registers its encrypted tables when
its models module is imported. Re-encryption, coverage scans, retention and exports then work
on plain SQL over the registered tables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class EncryptedTable:
    """One table with field ciphertexts.

    `columns` are the ciphertext columns, all encrypted under the DEK named in
    `version_column`. `time_column` dates a row for retention, and `retention_class` names the
    tenant's retention period (a key of the manifest's `privacy.retention_days`) after which
    the purge job clears the row's ciphertexts. A row whose time column is NULL (a request not
    closed yet) is never purged.

    `linking_columns` are clear columns that link a row to a person or a precise place, such
    as blind indexes of an e-mail or phone and a fine location cell. The purge sets them to
    NULL with the ciphertexts, and a row that still has one counts as past retention.

    When `delete_class` names a retention period, the purge deletes a row whose time column is
    older than that period, together with its dependent rows (`register_dependent_rows`).

    Each ciphertext is bound to a row id in its associated data. That is the value of
    `id_column` unless `row_id_columns` is set: then it is the values of those columns joined
    with ":" (alert channel addresses are bound to "<subscriber id>:<channel>", because the
    ciphertext is made before the row has its generated primary key).

    `exported` False leaves the table out of the sealed tenant export. Tables of credentials
    that the hub presents, such as agency webhook secrets, are registered with it, because a
    copy in an export stays valid for as long as the other side accepts it, which can be long
    after the tenant is offboarded.
    """

    table: str
    id_column: str
    columns: tuple[str, ...]
    version_column: str = "dek_version"
    tenant_column: str = "tenant_id"
    time_column: str | None = None
    retention_class: str = "personal_data"
    row_id_columns: tuple[str, ...] = ()
    exported: bool = True
    linking_columns: tuple[str, ...] = ()
    delete_class: str | None = None

    @property
    def bound_columns(self) -> tuple[str, ...]:
        """Columns whose values make up the row id the ciphertexts are bound to."""
        return self.row_id_columns or (self.id_column,)

    def bound_row_id(self, row: Mapping[str, Any]) -> str:
        """Return the row id that `row`'s ciphertexts are bound to (see the class docstring)."""
        return ":".join(str(row[name]) for name in self.bound_columns)


# Every registered table needs a DEK-version column, so re-encryption, the coverage scan and
# retention can find its rows per key version.
_tables: dict[str, EncryptedTable] = {}


def register_encrypted_table(
    table: str,
    *,
    id_column: str,
    columns: tuple[str, ...] | list[str],
    version_column: str = "dek_version",
    tenant_column: str = "tenant_id",
    time_column: str | None = None,
    retention_class: str = "personal_data",
    row_id_columns: tuple[str, ...] | list[str] = (),
    exported: bool = True,
    linking_columns: tuple[str, ...] | list[str] = (),
    delete_class: str | None = None,
) -> EncryptedTable:
    """Register (or re-register with the same definition) a table of field ciphertexts."""
    names = [
        table,
        id_column,
        version_column,
        tenant_column,
        *columns,
        *row_id_columns,
        *linking_columns,
    ]
    if time_column is not None:
        names.append(time_column)
    for name in names:
        if not _IDENTIFIER.match(name):
            raise ValueError(f"{name!r} is not a plain lower-case SQL identifier")
    if not columns:
        raise ValueError(f"table {table} registered without encrypted columns")
    entry = EncryptedTable(
        table=table,
        id_column=id_column,
        columns=tuple(columns),
        version_column=version_column,
        tenant_column=tenant_column,
        time_column=time_column,
        retention_class=retention_class,
        row_id_columns=tuple(row_id_columns),
        exported=exported,
        linking_columns=tuple(linking_columns),
        delete_class=delete_class,
    )
    existing = _tables.get(table)
    if existing is not None and existing != entry:
        raise ValueError(f"table {table} is already registered with another definition")
    _tables[table] = entry
    return entry


def encrypted_tables() -> list[EncryptedTable]:
    return [_tables[name] for name in sorted(_tables)]


def unregister_encrypted_table(table: str) -> None:
    """Remove a registration (tests that register scratch tables)."""
    _tables.pop(table, None)
    _dependents.pop(table, None)


@dataclass(frozen=True)
class DependentRows:
    """Rows of `table` whose `column` contains the id of a row of a registered table.

    `on_purge` says what the purge does to them when it clears the parent's personal data, and
    `on_delete` when it deletes the parent: "keep", "delete" or "unlink" (set `column` to NULL).
    """

    table: str
    column: str
    on_purge: str = "keep"
    on_delete: str = "delete"


_ACTIONS = ("keep", "delete", "unlink")
_dependents: dict[str, dict[tuple[str, str], DependentRows]] = {}


def register_dependent_rows(
    parent: str, table: str, column: str, *, on_purge: str = "keep", on_delete: str = "delete"
) -> DependentRows:
    """Register rows that the retention purge deletes or unlinks with a row of `parent`."""
    for name in (parent, table, column):
        if not _IDENTIFIER.match(name):
            raise ValueError(f"{name!r} is not a plain lower-case SQL identifier")
    for action in (on_purge, on_delete):
        if action not in _ACTIONS:
            raise ValueError(f"{action!r} is not one of {', '.join(_ACTIONS)}")
    entry = DependentRows(table=table, column=column, on_purge=on_purge, on_delete=on_delete)
    _dependents.setdefault(parent, {})[(table, column)] = entry
    return entry


def dependent_rows(parent: str) -> list[DependentRows]:
    return [entry for _key, entry in sorted(_dependents.get(parent, {}).items())]
