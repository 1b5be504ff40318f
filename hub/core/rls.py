"""Row-level security for tenant-owned tables on PostgreSQL, applied from migrations.

The policy admits a row when its `tenant_id` equals the transaction's `app.tenant_id` (set with
`set_config(..., true)` by `hub.core.db`), or when the transaction runs in the system scope `*`.
Tables get `FORCE ROW LEVEL SECURITY` so the policy applies to the table owner too, and the
application switches to the non-superuser role `hub_app` in each transaction because
superusers bypass every policy.
"""

from __future__ import annotations

from alembic import op

from hub.core.db import RLS_ROLE, SYSTEM_TENANT


def create_app_role() -> None:
    """Create the `hub_app` role once per cluster and grant it the schema's tables."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{RLS_ROLE}') THEN
                CREATE ROLE {RLS_ROLE} NOLOGIN;
            END IF;
        END
        $$;
        """
    )
    op.execute(f"GRANT {RLS_ROLE} TO CURRENT_USER")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {RLS_ROLE}")
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {RLS_ROLE}"
    )
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {RLS_ROLE}"
    )


def grant_existing() -> None:
    """Grant the app role the tables and sequences that exist now (default privileges cover
    tables created later by the same user)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {RLS_ROLE}")
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {RLS_ROLE}")


def enable_tenant_rls(table: str) -> None:
    """Enable and force row-level security on `table`, keyed on its `tenant_id` column."""
    if op.get_bind().dialect.name != "postgresql":
        return
    setting = "current_setting('app.tenant_id', true)"
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY tenant_isolation ON {table} "
        f"USING (tenant_id = {setting} OR {setting} = '{SYSTEM_TENANT}') "
        f"WITH CHECK (tenant_id = {setting} OR {setting} = '{SYSTEM_TENANT}')"
    )
