"""Tables whose columns hold field ciphertexts, registered by the features that own them.

`privacy` must not import the features, so each feature registers its encrypted tables when
its models module is imported. Re-encryption, coverage scans, retention and exports then work
on plain SQL over the registered tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class EncryptedTable:
    """One table with field ciphertexts.

    `columns` are the ciphertext columns, all encrypted under the DEK named in
    `version_column`. `time_column` dates a row for retention, and `retention_class` names the
    tenant's retention period (a key of the manifest's `privacy.retention_days`) after which
    the purge job clears the row's ciphertexts. Rows in `retention_guard` (a SQL condition on
    the table, for example "status = 'closed'") are the only ones purged.
    """

    table: str
    id_column: str
    columns: tuple[str, ...]
    version_column: str = "dek_version"
    tenant_column: str = "tenant_id"
    time_column: str | None = None
    retention_class: str = "personal_data"
    retention_guard: str | None = None


# NOTE: a table needs a DEK-version column to be registered. Ciphertext tables without one
# (alert subscriber channels, overflow contacts) are covered by crypto-shredding but not by
# re-encryption, the coverage scan or retention; their old DEK versions keep decrypting them
# because retired keys are kept until shredding.
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
    retention_guard: str | None = None,
) -> EncryptedTable:
    """Register (or re-register with the same definition) a table of field ciphertexts."""
    names = [table, id_column, version_column, tenant_column, *columns]
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
        retention_guard=retention_guard,
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
