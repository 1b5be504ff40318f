"""Regenerate the initial migration from the models: `python -m hub.migrations.regenerate`.

Until the first release there is one migration, `0001`, holding the whole schema; any change to
a model is followed by this command. After a release, new migrations go on top instead.
The script autogenerates against an empty SQLite database, then adds the PostgreSQL role and
a row-level security policy for every tenant-owned table.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command

from hub.core.migrate import MIGRATIONS_DIR, alembic_config
from hub.core.tenancy import TenantOwned
from hub.schema import metadata

VERSIONS = MIGRATIONS_DIR / "versions"


def tenant_tables() -> list[str]:
    tables = []
    for mapper in TenantOwned.__subclasses__():
        table = getattr(mapper, "__table__", None)
        if table is not None:
            tables.append(table.name)
    # Subclasses of subclasses (none today) would be missed by __subclasses__; check columns too.
    for table in metadata.sorted_tables:
        if table.name not in tables and "tenant_id" in table.c and table.name != "outbox":
            if not table.c.tenant_id.nullable:
                tables.append(table.name)
    return sorted(tables)


def main() -> None:
    for old in VERSIONS.glob("0001_*.py"):
        old.unlink()
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{Path(scratch) / 'empty.db'}"
        command.revision(
            alembic_config(url), message="initial schema", autogenerate=True, rev_id="0001"
        )
    path = next(VERSIONS.glob("0001_*.py"))
    text = path.read_text()
    listing = "".join(f'    "{name}",\n' for name in tenant_tables())
    text = text.replace(
        "import sqlalchemy as sa\n",
        "import sqlalchemy as sa\n\nfrom hub.core import rls\n\n"
        "# Tables with a row-level security policy on PostgreSQL.\n"
        f"TENANT_TABLES = (\n{listing})\n",
        1,
    )
    text = text.replace(
        "    # ### end Alembic commands ###\n",
        "    # ### end Alembic commands ###\n"
        "    rls.create_app_role()\n"
        "    rls.grant_existing()\n"
        "    for table in TENANT_TABLES:\n"
        "        rls.enable_tenant_rls(table)\n",
        1,
    )
    lines = [line for line in text.splitlines() if not line.startswith("Create Date:")]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    ruff = Path(sys.executable).parent / "ruff"
    subprocess.run([str(ruff), "format", "-q", str(path)], check=False)
    print(f"wrote {path.relative_to(MIGRATIONS_DIR.parent.parent)}")


if __name__ == "__main__":
    main()
