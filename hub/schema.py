"""Import every model module so `Base.metadata` holds the whole schema (for Alembic and tests).

Each feature that adds models adds its module here.
"""

from failover import models as failover_models  # noqa: F401
from hub.alerts import models as alert_models  # noqa: F401
from hub.core import (
    outbox,  # noqa: F401
    worker_starts,  # noqa: F401
)
from hub.core.db import Base
from hub.open311 import models as open311_models  # noqa: F401
from hub.requests import models as request_models  # noqa: F401
from privacy import models as privacy_models  # noqa: F401
from tenants import models as tenant_models  # noqa: F401

metadata = Base.metadata
