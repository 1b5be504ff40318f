from open311_support import client, hub_db, tenants_ab  # noqa: F401
