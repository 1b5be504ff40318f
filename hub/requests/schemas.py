"""Plain data passed into and out of the request services (no HTTP, no ORM)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from hub.core.errors import InvalidInput
from hub.core.tenancy import TenantContext

AttributeValue = str | list[str]


@dataclass
class IntakeData:
    """One new service request as a client or importer submits it, before validation.

    Text fields hold the client's exact text. Personal fields (names, email, phone, address,
    address_id, description, media_url, attributes) are encrypted before they are stored.
    """

    service_code: str
    lat: float | None = None
    lon: float | None = None
    address: str | None = None
    address_id: str | None = None
    zipcode: str | None = None
    description: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    device_id: str | None = None
    account_id: str | None = None
    media_url: str | None = None
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    channel: str = "api"
    source: str = "open311"
    # The id in the source system (importers); unique per tenant and source.
    source_id: str | None = None
    # Importers pass the original filing time; intake through the API uses the current time.
    requested_at: datetime | None = None
    api_key_id: int | None = None
    # Problems that the API found while parsing the form, such as a lat that is not a number
    # (lat and lon are then None). Validation reports these errors first, with its own.
    form_errors: Sequence[InvalidInput] = ()


@dataclass
class RequestQuery:
    """Filters of Open311 GET requests, already parsed. Dates carry an offset."""

    service_request_ids: list[str] = field(default_factory=list)
    service_codes: list[str] = field(default_factory=list)
    start_date: datetime | None = None
    end_date: datetime | None = None
    statuses: list[str] = field(default_factory=list)  # Open311 "open" and "closed"
    page: int = 1
    page_size: int = 1000


@dataclass(frozen=True)
class IntakeResult:
    """The result of POST requests: an id, or a token while intake is degraded."""

    service_request_id: str | None
    token: str | None
    service_notice: str | None
    account_id: str | None
    # True when a repeated Idempotency-Key got the result stored the first time.
    replayed: bool = False

    def as_open311(self) -> dict[str, str | None]:
        body: dict[str, str | None] = {}
        if self.token is not None:
            body["token"] = self.token
        else:
            body["service_request_id"] = self.service_request_id
        body["service_notice"] = self.service_notice
        body["account_id"] = self.account_id
        return body


@dataclass(frozen=True)
class IntakeJob:
    """One POST requests call, after its api_key and form fields were checked."""

    ctx: TenantContext
    data: IntakeData
    idempotency_key: str | None = None
    request_hash: str | None = None
    degraded: bool = False
    language: str | None = None
