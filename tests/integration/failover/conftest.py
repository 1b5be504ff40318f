from overflow_support import board, client, engine, hub_db, other_tenant, tenant  # noqa: F401
