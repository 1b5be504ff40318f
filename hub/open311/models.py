"""Tables of the Open311 API: the POST rate-limit bucket of each API key."""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Integer, PrimaryKeyConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hub.core.db import Base
from hub.core.tenancy import TenantOwned


class PostBucket(TenantOwned, Base):
    """The token bucket of one API key's POST requests, shared by every API process.

    `hub.open311.ratelimit` reads and writes it in one upsert per batch of POSTs.
    """

    __tablename__ = "open311_post_buckets"

    api_key_id: Mapped[int] = mapped_column(Integer)
    # Millionths of a call, so that whole calls are integer division on both databases.
    tokens: Mapped[int] = mapped_column(BigInteger)
    # Seconds since the Unix epoch of the last refill, from the API processes' clocks.
    updated: Mapped[float] = mapped_column(Float)
    # The calls that the last take granted, which the upsert returns to its caller.
    granted: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        PrimaryKeyConstraint("tenant_id", "api_key_id", name="pk_open311_post_buckets"),
    )
