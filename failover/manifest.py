"""Partner manifests: an independent contact center and its agreements with tenants.

A partner manifest is a YAML document with a `center` and a list of `agreements`, validated
with pydantic. Every error names its field path and what is accepted. A tenant's own centers
come from the `overflow` section of the tenant manifest instead.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from failover.eligibility import WEEKDAYS
from hub.core.errors import InvalidInput
from tenants.languages import check_language_tags
from tenants.manifest import SLUG, parse_hours_range

# Data-sharing levels of an agreement, from the least a partner agent sees to the most.
DATA_LEVELS = ("minimal", "standard", "full")
ALL_WEEK = {day: ["00:00-24:00"] for day in WEEKDAYS}


def weekly_minutes(hours: dict[str, list[str]]) -> dict[str, list[list[int]]]:
    """Convert `{weekday: ["HH:MM-HH:MM", ...]}` into minute ranges, checking each range."""
    out: dict[str, list[list[int]]] = {}
    for day, ranges in hours.items():
        if day not in WEEKDAYS:
            raise ValueError(f"unknown weekday {day!r}; use {', '.join(WEEKDAYS)}")
        out[day] = [list(parse_hours_range(text)) for text in ranges]
    return out


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class PartnerCenterSpec(_Model):
    """The partner center: staffing, skills (service groups), languages and local hours."""

    id: str
    name: str = Field(min_length=1, max_length=200)
    timezone: str
    agents: int = Field(ge=1, le=100_000)
    skills: list[str] = Field(min_length=1)
    languages: list[str] = Field(min_length=1)
    hours: dict[str, list[str]] = Field(default_factory=lambda: dict(ALL_WEEK))
    average_handle_seconds: float = Field(default=240, gt=0, le=7200)
    max_waiting: int = Field(default=200, ge=1)

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG.match(value):
            raise ValueError(f"{value!r} must be a slug: lower-case letters, digits and hyphens")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            message = f"{value!r} is not an IANA time zone such as America/Chicago"
            raise ValueError(message) from None
        return value

    @field_validator("languages")
    @classmethod
    def _languages(cls, value: list[str]) -> list[str]:
        return check_language_tags(value)

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        weekly_minutes(value)
        return value


class AgreementSpec(_Model):
    """One tenant's contacts this partner may take, and on which terms."""

    tenant: str
    id: str | None = None
    service_groups: list[str] = Field(default_factory=list)
    channels: list[Literal["call", "chat", "web", "sms"]] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=list)
    share_cap: float = Field(default=0.5, gt=0, le=1)
    hours: dict[str, list[str]] | None = None
    valid_from: date | datetime | None = None
    valid_until: date | datetime | None = None
    active: bool = True
    data_level: Literal["minimal", "standard", "full"] = "minimal"
    cost_weight: float = Field(default=1.0, gt=0, le=100)

    @field_validator("languages")
    @classmethod
    def _languages(cls, value: list[str]) -> list[str]:
        return check_language_tags(value)

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        if value is not None:
            weekly_minutes(value)
        return value

    @model_validator(mode="after")
    def _dates_in_order(self) -> AgreementSpec:
        start = as_datetime(self.valid_from)
        end = as_datetime(self.valid_until, whole_day=True)
        if start is not None and end is not None and end <= start:
            raise ValueError("valid_until must be after valid_from")
        return self


class PartnerManifest(_Model):
    center: PartnerCenterSpec
    agreements: list[AgreementSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_agreement_per_tenant(self) -> PartnerManifest:
        seen: set[str] = set()
        for agreement in self.agreements:
            if agreement.tenant in seen:
                raise ValueError(f"tenant {agreement.tenant!r} has two agreements; merge them")
            seen.add(agreement.tenant)
        return self


def as_datetime(
    value: date | datetime | None, zone: tzinfo = UTC, *, whole_day: bool = False
) -> datetime | None:
    """Return the UTC time of an agreement's `valid_from` or `valid_until`.

    A bare date means the start of that day in `zone` (the city's time zone), or with
    `whole_day` the start of the next day, so that `valid_until: 2027-12-31` includes the
    31st. A time without an offset is read in `zone` as well.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=zone)
    else:
        day = value + timedelta(days=1) if whole_day else value
        moment = datetime(day.year, day.month, day.day, tzinfo=zone)
    return moment.astimezone(UTC)


def _format_errors(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        parts: list[str] = []
        for item in error.get("loc", ()):
            if isinstance(item, int):
                parts[-1:] = [f"{parts[-1]}[{item}]" if parts else f"[{item}]"]
            else:
                parts.append(str(item))
        path = ".".join(parts) or "(document)"
        lines.append(f"{path}: {error['msg']}")
    return lines


def parse_partner_manifest(data: Any, *, source: str = "partner manifest") -> PartnerManifest:
    """Validate parsed YAML; raise InvalidInput listing every problem with its field path."""
    if not isinstance(data, dict):
        raise InvalidInput(f"{source}: the document must be a mapping with center and agreements")
    try:
        return PartnerManifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_format_errors(exc))
        raise InvalidInput(f"{source} is invalid: {problems}", code="invalid_manifest") from None


def load_partner_manifest(path: Path) -> PartnerManifest:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path} is not valid YAML: {exc}", code="invalid_manifest") from None
    return parse_partner_manifest(data, source=str(path))
