"""The tenant manifest: one YAML document that describes a jurisdiction served by the hub.

`load_manifest(path)` and `parse_manifest(data)` return a validated `Manifest` or raise
`ManifestError`, whose message lists every problem with its field path, for example
`services[3] (code SLO).attributes[0].datatype: must be one of string, number, ...`.

Core sections (`id`, `jurisdiction_id`, `services`, ...) reject unknown keys so that a typo
fails loudly. The feature sections `privacy`, `alerts` and `overflow` accept extra keys, so a
feature can read a new setting before this schema names it.
"""

from __future__ import annotations

import difflib
import re
from datetime import date
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hub.core.errors import InvalidInput
from privacy.purposes import PURPOSE, PURPOSE_RULE, english_description
from tenants.geometry import Geometry
from tenants.languages import (
    TAG_RULE,
    check_language_tags,
    is_language_tag,
    language_key,
    repeated_tags,
    text_for,
)
from tenants.manifest_errors import PATTERN_RULES, describe_error
from tenants.manifest_yaml import YamlDocument, path_text, read_yaml
from tenants.texts import template_problem, unknown_key_problem

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
# A DNS name with at least two labels, such as `nyc.gov` or `311.boston.gov`.
DOMAIN = re.compile(
    r"^(?=.{4,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$"
)
# Open311 service codes seen in the field include `001`, `ABNDBIKE`, `DMV66` and `4fd3b167e750`.
SERVICE_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
PATTERN_RULES[CODE.pattern] = (
    "use 1 to 64 letters, digits, `_`, `.` or `-`, starting with a letter or digit"
)
HOURS_RANGE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")

# Time zone abbreviations that people write for `timezone`, with the IANA zones they suggest.
# tzdata has zones named EST, MST and HST, but they are fixed offsets without daylight saving
# time, so they are rejected too.
ZONE_ABBREVIATIONS = {
    **dict.fromkeys(("EST", "EDT", "ET", "EST5EDT"), "America/New_York"),
    **dict.fromkeys(("CST", "CDT", "CT", "CST6CDT"), "America/Chicago"),
    **dict.fromkeys(("MST", "MDT", "MT", "MST7MDT"), "America/Denver (or America/Phoenix)"),
    **dict.fromkeys(("PST", "PDT", "PT", "PST8PDT"), "America/Los_Angeles"),
    **dict.fromkeys(("AKST", "AKDT"), "America/Anchorage"),
    **dict.fromkeys(("HST", "HAST"), "Pacific/Honolulu"),
    **dict.fromkeys(("AST", "ADT"), "America/Halifax (or America/Puerto_Rico)"),
    **dict.fromkeys(("NST", "NDT"), "America/St_Johns"),
}

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# How far ahead a business-clock deadline is searched for (tenants.calendar); a business SLA
# must fit in the working hours of that many days.
DEADLINE_SEARCH_DAYS = 3 * 366
DATATYPES = ("string", "number", "datetime", "text", "singlevaluelist", "multivaluelist")
LIST_DATATYPES = ("singlevaluelist", "multivaluelist")


class ManifestError(InvalidInput):
    """A manifest failed validation; `problems` contains one `path: message` line per error."""

    def __init__(self, problems: list[str], *, source: str | None = None):
        self.problems = problems
        where = f"{source}: " if source else ""
        summary = f"{where}invalid manifest ({len(problems)} problem(s)): " + "; ".join(problems)
        super().__init__(summary, code="invalid_manifest")


class _Section(BaseModel):
    """A manifest section whose checks that compare fields live in `compare_fields`.

    `compare_fields` takes an object with one attribute per field. After a full validation
    that object is the model itself. When other fields of the section are invalid,
    `parse_manifest` passes an object with only the valid fields, so these checks still
    report their problems in the same run. Each check must skip itself when a field it reads
    is absent (`hasattr`).
    """

    @classmethod
    def compare_fields(cls, fields: Any) -> list[str]:
        """Return one `path: message` line per problem found by comparing fields."""
        return []

    @model_validator(mode="after")
    def _compare_fields(self) -> Any:
        problems = type(self).compare_fields(self)
        if problems:
            # Raised as one error whose lines already carry their own paths.
            raise ValueError("\n".join(problems))
        return self


class _Strict(_Section):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class _Extensible(_Section):
    model_config = ConfigDict(extra="allow", frozen=True, str_strip_whitespace=True)


# Text per language code, e.g. {"en": "Pothole", "es": "Bache"}.
LocalizedText = dict[str, str]


def _check_localized(value: LocalizedText, *, required: bool) -> LocalizedText:
    if required and not value:
        raise ValueError("must give the text in at least one language")
    for tag, text in value.items():
        if not is_language_tag(tag):
            raise ValueError(f"language key {tag!r} is not {TAG_RULE}")
        if not text.strip():
            raise ValueError(f"text for language {tag!r} is empty")
    repeated = repeated_tags(value)
    if repeated:
        raise ValueError(
            f"language keys {', '.join(map(repr, repeated))} name one language, because tags "
            "ignore case; keep one of them"
        )
    return value


class District(_Strict):
    """A named area inside the service area, used by the open-data `district` location rule."""

    code: Annotated[str, Field(pattern=CODE.pattern)]
    name: str = Field(min_length=1, max_length=200)
    geometry: Geometry


# --- service catalog ------------------------------------------------------------------------


class AttributeValue(_Strict):
    """One allowed value of a list attribute: the `key` sent by clients and its display names."""

    key: str = Field(min_length=1, max_length=120)
    names: LocalizedText

    @field_validator("names")
    @classmethod
    def _names(cls, value: LocalizedText) -> LocalizedText:
        return _check_localized(value, required=True)


class Attribute(_Strict):
    """An Open311 service definition attribute (GeoReport v2 `GET services/{code}`).

    `variable: false` marks an informational attribute that clients show but never submit.
    `values` is required for the two list datatypes and forbidden for the others.
    """

    code: Annotated[str, Field(pattern=CODE.pattern)]
    datatype: str
    descriptions: LocalizedText
    variable: bool = True
    required: bool = False
    order: int = Field(default=0, ge=0)
    datatype_descriptions: LocalizedText = Field(default_factory=dict)
    values: list[AttributeValue] = Field(default_factory=list)

    @field_validator("datatype")
    @classmethod
    def _datatype(cls, value: str) -> str:
        if value not in DATATYPES:
            raise ValueError(f"must be one of {', '.join(DATATYPES)}; got {value!r}")
        return value

    @field_validator("descriptions")
    @classmethod
    def _descriptions(cls, value: LocalizedText) -> LocalizedText:
        return _check_localized(value, required=True)

    @classmethod
    def compare_fields(cls, fields: Any) -> list[str]:
        if not hasattr(fields, "values"):
            return []
        values = fields.values
        if hasattr(fields, "datatype"):
            datatype = fields.datatype
            if datatype in LIST_DATATYPES and not values:
                return [f"values: a {datatype} attribute needs at least one value"]
            if datatype not in LIST_DATATYPES and values:
                return [f"values: only list datatypes take values, not {datatype}"]
        keys = [v.key for v in values if hasattr(v, "key")]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            return [f"values: duplicate key(s) {', '.join(duplicates)}"]
        return []


OpenDataLocation = Literal["exact", "h3", "district", "withheld"]


class OpenData(_Strict):
    """The location rule of a service in anonymized open data.

    `exact` publishes the stored public point, `h3` the center of its H3 cell at
    `h3_resolution` (0 to 15; resolution 8 cells average 0.74 km², per
    `h3.average_hexagon_area`), `district` the district name from the manifest, `withheld`
    nothing. A location-sensitive service under `h3` or `exact` may use resolution 8 at most.
    """

    location: OpenDataLocation = "h3"
    h3_resolution: int = Field(default=8, ge=0, le=15)


# The finest `h3_resolution` that a location-sensitive service may publish under the `h3` and
# `exact` rules: the default resolution, whose cells average 0.74 km². Resolution 15 cells
# average 0.9 m², which would publish the resident's point.
SENSITIVE_MAX_H3_RESOLUTION = 8


class ServiceSpec(_Strict):
    """One entry of the Open311 service catalog.

    `agency` overrides the routing rules for this service. `sla_hours` is the target in hours
    on the clock named by `sla_clock`: `business` counts only the tenant's working hours,
    `continuous` counts every hour (for hazards such as a water main break).
    `location_sensitive` services keep their exact point encrypted only.
    """

    code: Annotated[str, Field(pattern=SERVICE_CODE.pattern)]
    names: LocalizedText
    descriptions: LocalizedText = Field(default_factory=dict)
    # Names this service has in the city's own exports (e.g. NYC's "Complaint Type"), so
    # importers can map a source category to this code.
    aliases: list[str] = Field(default_factory=list)
    type: Literal["realtime", "batch", "blackbox"] = "realtime"
    keywords: list[str] = Field(default_factory=list)
    group: str = Field(default="", max_length=120)
    attributes: list[Attribute] = Field(default_factory=list)
    agency: str | None = None
    sla_hours: float | None = Field(default=None, gt=0, le=24 * 365)
    sla_clock: Literal["business", "continuous"] = "business"
    location_sensitive: bool = False
    open_data: OpenData = Field(default_factory=OpenData)
    active: bool = True

    @field_validator("names")
    @classmethod
    def _names(cls, value: LocalizedText) -> LocalizedText:
        return _check_localized(value, required=True)

    @field_validator("descriptions")
    @classmethod
    def _descriptions(cls, value: LocalizedText) -> LocalizedText:
        return _check_localized(value, required=False)

    @model_validator(mode="after")
    def _sensitive_resolution(self, info: ValidationInfo) -> ServiceSpec:
        # Stored manifests onboarded before this limit must still load, or their tenants
        # would stop serving; `parse_manifest(..., stored=True)` skips the check.
        if info.context and info.context.get("stored"):
            return self
        resolution = self.open_data.h3_resolution
        publishes_cell = self.open_data.location in ("h3", "exact")
        if self.location_sensitive and publishes_cell and resolution > SENSITIVE_MAX_H3_RESOLUTION:
            raise ValueError(
                f"open_data.h3_resolution: {resolution} is finer than a location-sensitive "
                f"service may publish; use {SENSITIVE_MAX_H3_RESOLUTION} or lower"
            )
        return self

    @classmethod
    def compare_fields(cls, fields: Any) -> list[str]:
        # An attribute that failed validation may still have a valid code to compare.
        codes = [a.code for a in getattr(fields, "attributes", []) if hasattr(a, "code")]
        duplicates = sorted({c for c in codes if codes.count(c) > 1})
        if duplicates:
            return [f"attributes: duplicate code(s) {', '.join(duplicates)}"]
        return []

    @property
    def metadata(self) -> bool:
        """Open311 `metadata`: true when the service has a definition with attributes."""
        return bool(self.attributes)


# --- agencies and routing -------------------------------------------------------------------


# The lowest `max_deliveries_per_minute`: one delivery about every 17 hours. A lower cap is no
# receiver's rate limit, and at about 1e-10 the send slot interval no longer fits a Python
# datetime, so every claim of the agency's deliveries would fail.
MIN_DELIVERIES_PER_MINUTE = 0.001


class AgencySpec(_Strict):
    """An agency back office that receives routed requests by HTTP webhook.

    `webhook_secret` signs the webhook body with HMAC-SHA256. When it is missing, onboarding
    generates a random one and keeps it across later onboardings. After
    `hub tenants agency-secret --rotate` replaced the secret that a manifest set, onboarding
    keeps the rotated one and warns while the manifest still carries the replaced one. A
    different secret in the manifest replaces the stored one.

    `max_deliveries_per_minute` caps the deliveries that the hub sends to the agency, counted
    over all worker processes, for a receiver with an API rate limit. Deliveries over the cap
    wait for a free send slot with no attempt counted. Without it the hub sends as fast as its
    workers run.
    """

    code: Annotated[str, Field(pattern=CODE.pattern)]
    name: str = Field(min_length=1, max_length=200)
    webhook_url: str | None = Field(default=None, max_length=2000)
    webhook_secret: str | None = Field(default=None, min_length=16, max_length=128)
    max_deliveries_per_minute: float | None = Field(
        default=None, ge=MIN_DELIVERIES_PER_MINUTE, allow_inf_nan=False
    )

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL; got {value!r}")
        return value


class RoutingRule(_Strict):
    """Send requests of `service_code`, or of every service in `group`, to `agency`."""

    agency: str
    service_code: str | None = None
    group: str | None = None

    @classmethod
    def compare_fields(cls, fields: Any) -> list[str]:
        if not (hasattr(fields, "service_code") and hasattr(fields, "group")):
            return []
        if (fields.service_code is None) == (fields.group is None):
            return ["give exactly one of service_code or group"]
        return []


class Routing(_Strict):
    """Agency routing: a service's own `agency` first, then the first matching rule, then
    `default`. A service that matches nothing and has no default is not routed."""

    default: str | None = None
    rules: list[RoutingRule] = Field(default_factory=list)


# --- business calendar ----------------------------------------------------------------------


ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class Holiday(_Strict):
    """A date with no working hours, named for people reading the calendar."""

    date: date
    name: str = ""

    @field_validator("date", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> Any:
        # `load_manifest` keeps dates as the text written in the file, and YAML reads
        # 20260704 as a number.
        if isinstance(value, date):
            return value
        text = str(value).strip()
        if not ISO_DATE.match(text):
            raise ValueError(f"{text!r} is not a date; write it as YYYY-MM-DD, such as 2026-12-25")
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{text!r} is not a day of the calendar: that month has no day {int(text[8:])}"
                if 1 <= int(text[5:7]) <= 12
                else f"{text!r} is not a date: there is no month {int(text[5:7])}"
            ) from None


def _default_hours() -> dict[str, list[str]]:
    return {day: ["09:00-17:00"] for day in WEEKDAYS[:5]}


class CalendarSpec(_Strict):
    """Working hours per weekday as local wall-clock ranges `HH:MM-HH:MM` (end may be 24:00),
    and holidays. A weekday left out has no working hours. Default: Monday to Friday,
    09:00-17:00, no holidays."""

    hours: dict[str, list[str]] = Field(default_factory=_default_hours)
    holidays: list[Holiday] = Field(default_factory=list)

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return check_weekly_hours(value)


def check_weekly_hours(value: dict[str, list[str]]) -> dict[str, list[str]]:
    """Check weekday names and `HH:MM-HH:MM` ranges (in order, not overlapping)."""
    for day, ranges in value.items():
        if day not in WEEKDAYS:
            raise ValueError(f"weekday {day!r} must be one of {', '.join(WEEKDAYS)}")
        previous_end = -1
        for text in ranges:
            try:
                start, end = parse_hours_range(text)
            except ValueError as exc:
                raise ValueError(f"{day}: {exc}") from None
            if start < previous_end:
                raise ValueError(f"{day}: range {text!r} overlaps or is out of order")
            previous_end = end
    if not any(value.values()):
        raise ValueError("no working hours on any weekday")
    return value


def parse_hours_range(text: str) -> tuple[int, int]:
    """Parse `HH:MM-HH:MM` into minutes after midnight; the end may be 24:00."""
    match = HOURS_RANGE.match(text)
    if not match:
        raise ValueError(f"hours range {text!r} must look like 08:30-17:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or m1 > 59 or m2 > 59 or end > 24 * 60:
        raise ValueError(f"hours range {text!r} has an invalid time")
    if end <= start:
        raise ValueError(f"hours range {text!r} must end after it starts")
    return start, end


# --- feature sections -----------------------------------------------------------------------


class DecryptionPurposeSpec(_Strict):
    """A purpose the tenant's staff may decrypt residents' personal data for.

    Staff name the `code` with `?purpose=` in the staff API or `--purpose` in the CLI.
    `descriptions` describes what the purpose covers, for staff and auditors, in English and
    optionally other languages.
    """

    code: str
    descriptions: LocalizedText

    @field_validator("code")
    @classmethod
    def _code(cls, value: str) -> str:
        if not PURPOSE.match(value):
            raise ValueError(f"{value!r} is not a valid purpose code; {PURPOSE_RULE}")
        return value

    @field_validator("descriptions")
    @classmethod
    def _descriptions(cls, value: LocalizedText) -> LocalizedText:
        _check_localized(value, required=True)
        if not english_description(value):
            raise ValueError("missing the English text; add it under the key 'en'")
        return value


# The data classes of `privacy.retention_days`; a class left out keeps its default.
RETENTION_CLASSES = ("personal_data", "requests", "audit")


class PrivacySection(_Extensible):
    """Open-data anonymization, retention and the purposes staff may decrypt for.

    `k` is the k-anonymity threshold over (service, location cell, time bucket).
    `time_bucket` is the open-data time granularity. `retention_days` maps a data class to
    days. The purge job clears a request's personal data `personal_data` days after it closed
    (and a status note's that many days after the note), and deletes the request with its
    history `requests` days after it closed. It deletes the tenant's audit entries `audit`
    days after they were written, from the start of the tenant's audit chain up to a signed
    anchor that `hub audit verify` accepts as the chain's new start.
    `decryption_purposes` lists the purposes the staff API and CLI accept. When it is empty or
    left out, the hub's default staff purposes apply (`staff.request_view`). The purposes that
    the hub itself decrypts for, such as agency delivery, apply to every tenant.
    """

    k: int = Field(default=5, ge=2, le=1000)
    time_bucket: Literal["hour", "day", "week", "month"] = "day"
    retention_days: dict[str, int] = Field(
        default_factory=lambda: {"personal_data": 730, "requests": 2555, "audit": 2555}
    )

    decryption_purposes: list[DecryptionPurposeSpec] = Field(default_factory=list)

    @field_validator("retention_days")
    @classmethod
    def _positive(cls, value: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        # Stored manifests may predate the check on class names: their tenant must load.
        stored = bool(info.context and info.context.get("stored"))
        for data_class, days in value.items():
            if data_class not in RETENTION_CLASSES and not stored:
                close = difflib.get_close_matches(data_class, RETENTION_CLASSES, n=1, cutoff=0.5)
                hint = f"did you mean {close[0]}? " if close else ""
                raise ValueError(
                    f"{data_class!r} is not a data class with a retention period; {hint}"
                    f"the classes are {', '.join(RETENTION_CLASSES)}"
                )
            if days < 1:
                raise ValueError(f"{data_class}: retention must be at least 1 day, got {days}")
        return value

    @classmethod
    def compare_fields(cls, fields: Any) -> list[str]:
        purposes = getattr(fields, "decryption_purposes", [])
        return _duplicates("decryption_purposes", [getattr(p, "code", None) for p in purposes])


class ApprovalPolicy(_Extensible):
    """The approval policy for alerts before they are sent.

    `second_approver_for_actual`: an alert with status Actual needs a second emergency manager.
    `single_approver_for_immediate_extreme`: an Actual alert with urgency Immediate and severity
    Extreme may go out on one approval, and is then reviewed within `review_within_hours`.
    """

    second_approver_for_actual: bool = True
    single_approver_for_immediate_extreme: bool = True
    review_within_hours: float = Field(default=24, gt=0)
    # A regional alert reaches a tenant's residents only with that tenant's own approval,
    # unless its manifest accepts the originating tenant's.
    regional_requires_each_tenant: bool = True


class GeocodeZone(_Strict):
    """A CAP `geocode` (valueName, value) with the area it stands for."""

    value_name: str = Field(min_length=1)
    value: str = Field(min_length=1)
    name: str = ""
    geometry: Geometry | None = None


def _default_rate_limits() -> dict[str, float]:
    # Messages per second per channel: a US SMS short code sends about 100 segments/s.
    return {"sms": 100.0, "email": 50.0, "webpush": 500.0, "webhook": 50.0}


class AlertsSection(_Extensible):
    """Emergency alerts: approval policy, per-channel send rates (messages per second) and
    the geocode zones an alert may target."""

    # Extension keys that hub.alerts reads itself (`alerts.providers.<channel>` and
    # `alerts.public_base_url`), so validation does not warn that nothing reads them.
    EXTENSION_KEYS: ClassVar[tuple[str, ...]] = ("providers", "public_base_url")

    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    rate_limits: dict[str, float] = Field(default_factory=_default_rate_limits)
    geocode_zones: list[GeocodeZone] = Field(default_factory=list)

    @field_validator("rate_limits")
    @classmethod
    def _positive_rates(cls, value: dict[str, float]) -> dict[str, float]:
        for channel, rate in value.items():
            if not rate > 0:
                raise ValueError(f"{channel}: rate must be greater than 0 per second, got {rate}")
        return value


class ContactCenterSpec(_Extensible):
    """A contact center the tenant runs: staffing, skills (service groups or codes it can
    handle), languages and opening hours (same format as the business calendar)."""

    id: Annotated[str, Field(pattern=SLUG.pattern)]
    name: str = Field(min_length=1)
    agents: int = Field(ge=0)
    skills: list[str] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=lambda: ["en"])
    hours: dict[str, list[str]] = Field(default_factory=_default_hours)
    average_handle_seconds: float = Field(default=240, gt=0)

    @field_validator("languages")
    @classmethod
    def _languages(cls, value: list[str]) -> list[str]:
        return check_language_tags(value)

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return check_weekly_hours(value)


class OverflowThresholds(_Extensible):
    """Surge detection with hysteresis, in seconds.

    Overflow turns on after the expected wait stays above `high_wait_seconds` for
    `high_hold_seconds`, and off after it stays below `low_wait_seconds` for
    `low_hold_seconds`. A center with no heartbeat for `heartbeat_timeout_seconds` is
    Unreachable.
    """

    high_wait_seconds: float = Field(default=120, gt=0)
    low_wait_seconds: float = Field(default=45, ge=0)
    high_hold_seconds: float = Field(default=60, ge=0)
    low_hold_seconds: float = Field(default=300, ge=0)
    heartbeat_timeout_seconds: float = Field(default=30, gt=0)

    @classmethod
    def compare_fields(cls, fields: Any) -> list[str]:
        if not (hasattr(fields, "low_wait_seconds") and hasattr(fields, "high_wait_seconds")):
            return []
        if fields.low_wait_seconds >= fields.high_wait_seconds:
            return ["low_wait_seconds must be below high_wait_seconds"]
        return []


class OverflowSection(_Extensible):
    """Contact centers and overflow routing.

    The service level is the share of contacts answered within `service_level_target_seconds`.
    The usual contact-center target is 80% within 30 s.
    """

    centers: list[ContactCenterSpec] = Field(default_factory=list)
    thresholds: OverflowThresholds = Field(default_factory=OverflowThresholds)
    service_level_target_seconds: float = Field(default=30, gt=0)
    service_level_target_percent: float = Field(default=80, gt=0, le=100)


# POSTs per minute per API key when a manifest sets no limit. One key can file for a whole
# city (its app or its call center), and 600 a minute is 10 a second, about three times the
# 3.2 contacts a second that New York City's record day of 277,000 calls averaged.
DEFAULT_MAX_POSTS_PER_MINUTE_PER_KEY = 600


class Open311Section(_Strict):
    """Limits of the Open311 API.

    `max_posts_per_minute_per_key` limits the `POST requests` calls of each API key, counted
    over every API process. A key may file that many at once after a minute without calls,
    and then one every 60 / limit seconds. Calls over the limit get 429 with `Retry-After`.
    `null` turns the limit off. A key created with `--max-posts-per-minute` has its own limit.
    """

    max_posts_per_minute_per_key: int | None = Field(
        default=DEFAULT_MAX_POSTS_PER_MINUTE_PER_KEY, ge=1
    )


class ProfileSection(_Strict):
    """Overrides for per-tenant profile hooks (see `tenants.profile`).

    `status_texts` maps a language to texts by key, replacing the built-in texts for those
    keys only. A key is a request state (`submitted`, `acknowledged`, `in_progress`,
    `on_hold`, `closed`), or `closed:<resolution>` for a closed request with that resolution.
    It may also be an intake notice. `notice.received` is the plain notice, and
    `notice.expected` is the notice of a request with an expected date, which the text shows
    with the placeholder `{expected}`. `notice.token` is the notice of a queued request.
    Validation rejects unknown keys, placeholders that the hub does not fill, and languages
    missing from `languages`. `group_names` maps a service `group` to its name per
    language, which Open311 service lists show in place of the group as written.
    """

    status_texts: dict[str, dict[str, str]] = Field(default_factory=dict)
    group_names: dict[str, LocalizedText] = Field(default_factory=dict)

    @field_validator("status_texts")
    @classmethod
    def _status_texts(
        cls, value: dict[str, dict[str, str]], info: ValidationInfo
    ) -> dict[str, dict[str, str]]:
        # Skipped for stored manifests, which may predate the check: intake falls back to the
        # built-in text of a template that it cannot fill.
        if info.context and info.context.get("stored"):
            return value
        problems = []
        for tag, texts in value.items():
            for key, text in texts.items():
                problem = unknown_key_problem(key) or template_problem(key, text)
                if problem is not None:
                    problems.append(f"{tag}.{key}: {problem}")
        if problems:
            raise ValueError("\n".join(problems))
        return value

    @field_validator("group_names")
    @classmethod
    def _group_names(cls, value: dict[str, LocalizedText]) -> dict[str, LocalizedText]:
        for names in value.values():
            _check_localized(names, required=True)
        return value


# --- the manifest ---------------------------------------------------------------------------


def _sla_fits_calendar(services: list[Any], calendar: Any) -> list[str]:
    """Return a problem for each business-clock SLA longer than the working hours that the
    deadline search covers. Intake would reject every request of such a service."""
    hours = getattr(calendar, "hours", None)
    if not isinstance(hours, dict):
        return []
    daily = {
        day: sum(end - start for start, end in map(parse_hours_range, hours.get(day, ()))) / 60
        for day in WEEKDAYS
    }
    weekly = sum(daily.values())
    days_off = [getattr(holiday, "date", None) for holiday in getattr(calendar, "holidays", [])]
    holiday_hours = sum(daily[WEEKDAYS[day.weekday()]] for day in days_off if isinstance(day, date))
    # Whole weeks only, less a week for the start: a safe lower bound of the time searched.
    capacity = weekly * ((DEADLINE_SEARCH_DAYS - 7) // 7) - holiday_hours
    problems = []
    for index, service in enumerate(services):
        sla = getattr(service, "sla_hours", None)
        if sla and getattr(service, "sla_clock", None) == "business" and sla > capacity:
            problems.append(
                f"services[{index}].sla_hours: {sla:g} business hours do not fit in the "
                f"{DEADLINE_SEARCH_DAYS // 366} years a deadline is searched for on this "
                f"calendar ({weekly:g} working hours a week), so every request of the service "
                f"would be rejected; give at most {int(capacity)} hours, add working hours, or "
                "set sla_clock: continuous"
            )
    return problems


class Manifest(_Strict):
    """A tenant: its identity, service area, catalog, agencies, calendar and feature settings.

    `id` is a slug used in commands and ids. `jurisdiction_id` is the city's domain as Open311
    clients send it. `languages` are BCP 47 tags and the first is the default; English and
    Spanish at least are recommended for resident-facing text.
    """

    id: str
    jurisdiction_id: str
    name: str = Field(min_length=1, max_length=200)
    timezone: str
    languages: list[str] = Field(min_length=1)
    region: str | None = None
    service_area: Geometry
    districts: list[District] = Field(default_factory=list)
    services: list[ServiceSpec] = Field(min_length=1)
    agencies: list[AgencySpec] = Field(default_factory=list)
    routing: Routing = Field(default_factory=Routing)
    calendar: CalendarSpec = Field(default_factory=CalendarSpec)
    privacy: PrivacySection = Field(default_factory=PrivacySection)
    alerts: AlertsSection = Field(default_factory=AlertsSection)
    overflow: OverflowSection = Field(default_factory=OverflowSection)
    open311: Open311Section = Field(default_factory=Open311Section)
    profile: ProfileSection = Field(default_factory=ProfileSection)

    @field_validator("id", "region")
    @classmethod
    def _slug(cls, value: str | None) -> str | None:
        if value is not None and not SLUG.match(value):
            raise ValueError(
                f"{value!r} must be a slug: lower-case letters, digits and hyphens, 1-64 long"
            )
        return value

    @field_validator("jurisdiction_id")
    @classmethod
    def _domain(cls, value: str) -> str:
        if not DOMAIN.match(value):
            raise ValueError(f"{value!r} must be the city's domain in lower case, e.g. nyc.gov")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str, info: ValidationInfo) -> str:
        # Some abbreviations (EST, EST5EDT, HST) are also valid IANA names, which stored
        # manifests onboarded before this check may hold (see `parse_manifest`).
        stored = bool(info.context and info.context.get("stored"))
        suggestion = None if stored else ZONE_ABBREVIATIONS.get(value.upper())
        if suggestion is not None:
            raise ValueError(
                f"{value!r} is a time zone abbreviation; use the city's IANA time zone, "
                f"{suggestion}"
            )
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not an IANA time zone such as America/New_York"
            ) from None
        return value

    @field_validator("languages")
    @classmethod
    def _languages(cls, value: list[str]) -> list[str]:
        check_language_tags(value)
        duplicates = repeated_tags(value)
        if duplicates:
            raise ValueError(
                f"duplicate language(s) {', '.join(duplicates)}; tags ignore case, so list "
                "each language once"
            )
        return value

    @classmethod
    def compare_fields(cls, fields: Any) -> list[str]:
        """Check codes for duplicates, references to agencies and districts, and the
        languages of service names.

        With some sections invalid, each check runs on the entries it can read. A check of a
        reference to an agency runs only when every agency has a valid code, so that a code
        with a typo is not also reported as unknown wherever it is used.
        """
        agencies = getattr(fields, "agencies", None)
        services = getattr(fields, "services", [])
        districts = getattr(fields, "districts", None)
        problems: list[str] = []
        if agencies is not None:
            problems += _duplicates("agencies", [getattr(a, "code", None) for a in agencies])
        problems += _duplicates("services", [getattr(s, "code", None) for s in services])
        if districts is not None:
            problems += _duplicates("districts", [getattr(d, "code", None) for d in districts])

        known: set[str] | None = None
        if agencies is not None and all(hasattr(a, "code") for a in agencies):
            known = {a.code for a in agencies}
        languages = getattr(fields, "languages", None)
        for index, service in enumerate(services):
            problems += _service_references(
                f"services[{index}]", service, known, languages, districts
            )

        profile = getattr(fields, "profile", None)
        if profile is not None and all(hasattr(s, "group") for s in services):
            groups = {s.group for s in services}
            for group in getattr(profile, "group_names", {}):
                if group not in groups:
                    problems.append(
                        f"profile.group_names: no service has the group {group!r}; use a "
                        "group that a service names, or remove it"
                    )

        routing = getattr(fields, "routing", None)
        if known is not None and routing is not None:
            default = getattr(routing, "default", None)
            if default is not None and default not in known:
                problems.append(f"routing.default: unknown agency {default!r}")
            for index, rule in enumerate(getattr(routing, "rules", [])):
                agency = getattr(rule, "agency", None)
                if agency is not None and agency not in known:
                    problems.append(f"routing.rules[{index}].agency: unknown agency {agency!r}")
        return problems

    @model_validator(mode="after")
    def _slas_fit_calendar(self, info: ValidationInfo) -> Manifest:
        # Skipped for stored manifests, which may predate the check: such a tenant must keep
        # loading, with intake rejecting only the service whose SLA does not fit.
        if info.context and info.context.get("stored"):
            return self
        problems = _sla_fits_calendar(self.services, self.calendar)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @model_validator(mode="after")
    def _status_text_languages(self, info: ValidationInfo) -> Manifest:
        # An error, as for service names: residents can never pick a language that
        # `languages` does not list. Skipped for stored manifests, which may predate the check.
        if info.context and info.context.get("stored"):
            return self
        keys = {language_key(tag) for tag in self.languages}
        problems = [
            f"profile.status_texts.{tag}: language {tag!r} is not in languages "
            f"({', '.join(self.languages)}); add it there or remove its texts"
            for tag in self.profile.status_texts
            if language_key(tag) not in keys
        ]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def default_language(self) -> str:
        return self.languages[0]

    def agency_for(self, service_code: str) -> str | None:
        """Return the agency code that receives requests of `service_code`, or None."""
        service = self.service(service_code)
        if service is None:
            return None
        if service.agency is not None:
            return service.agency
        for rule in self.routing.rules:
            if rule.service_code == service_code or (
                rule.group is not None and rule.group == service.group
            ):
                return rule.agency
        return self.routing.default

    def service(self, code: str) -> ServiceSpec | None:
        for service in self.services:
            if service.code == code:
                return service
        return None

    def agency(self, code: str) -> AgencySpec | None:
        for agency in self.agencies:
            if agency.code == code:
                return agency
        return None

    def stored_form(self) -> dict[str, Any]:
        """Return the manifest as JSON-ready data without webhook secrets, for the tenants
        table (the secrets live in the agencies table only)."""
        data = self.model_dump(mode="json")
        for agency in data["agencies"]:
            agency["webhook_secret"] = None
        return data


def _service_references(
    path: str,
    service: Any,
    agencies: set[str] | None,
    languages: list[str] | None,
    districts: list[Any] | None,
) -> list[str]:
    """Check one service's agency, open-data rule and name languages against the manifest.

    `agencies` is None unless every agency has a valid code, `languages` is None unless the
    list is valid, and `districts` is None unless the section is a list.
    """
    problems = []
    agency = getattr(service, "agency", None)
    if agencies is not None and agency is not None and agency not in agencies:
        problems.append(f"{path}.agency: unknown agency {agency!r}")
    open_data = getattr(service, "open_data", None)
    if getattr(open_data, "location", None) == "district" and districts == []:
        problems.append(f"{path}.open_data.location: 'district' needs a districts section")
    if languages is None or not hasattr(service, "names"):
        return problems
    if text_for(service.names, languages[0]) is None:
        problems.append(f"{path}.names: missing the default language {languages[0]!r}")
    keys = {language_key(tag) for tag in languages}
    for tag in service.names:
        if language_key(tag) not in keys:
            problems.append(
                f"{path}.names: language {tag!r} is not in languages "
                f"({', '.join(languages)}); add it there or remove the name"
            )
    return problems


def _duplicates(section: str, codes: list[str | None]) -> list[str]:
    """Report repeated codes; None stands for an entry without a valid code."""
    seen: dict[str, int] = {}
    problems = []
    for index, code in enumerate(codes):
        if code is None:
            continue
        if code in seen:
            problems.append(
                f"{section}[{index}].code: duplicate {code!r} (first at [{seen[code]}])"
            )
        else:
            seen[code] = index
    return problems


# --- error messages -------------------------------------------------------------------------


def _format_errors(
    error: ValidationError, written: dict[tuple[Any, ...], tuple[str, str]]
) -> list[str]:
    """Return one `path: message` line per error. `written` is the text that the YAML file
    wrote for each value that YAML did not read as text, by location."""
    problems = []
    for item in error.errors():
        location = tuple(item["loc"])
        path = path_text(location)
        if item["type"] == "value_error":
            message = item["msg"].removeprefix("Value error, ")
        else:
            message = describe_error(item, Manifest, written.get(location))
        for line in message.split("\n"):
            problems.append(_join_path(path, line))
    return problems


# A check's message that starts with its own relative path, such as `coordinates[0]: ...`.
# A part may contain a colon between words, as the status text key `closed:fixed` does.
_RELATIVE_PATH = re.compile(
    r"^([A-Za-z_]\w*(?::\w+)*(?:\[\d+\])*(?:\.[A-Za-z_]\w*(?::\w+)*(?:\[\d+\])*)*): (.+)$"
)


def _join_path(path: str, message: str) -> str:
    match = _RELATIVE_PATH.match(message)
    if match is None:
        return f"{path}: {message}" if path else message
    relative, rest = match.groups()
    if not path:
        return f"{relative}: {rest}"
    return f"{path}.{relative}: {rest}"


# --- checks that compare fields, run despite invalid fields ---------------------------------


@cache
def _field_adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    info = model.model_fields[name]
    if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
        return TypeAdapter(info.annotation)
    annotation = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
    # The same stripping as the sections' own config, so compared values match.
    return TypeAdapter(annotation, config=ConfigDict(str_strip_whitespace=True))


def _section_in(annotation: Any) -> tuple[type[_Section] | None, bool]:
    """Return the section model of a field annotated `Model` or `list[Model]` and whether the
    field is a list. Other fields return (None, False)."""
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        if isinstance(item, type) and issubclass(item, _Section):
            return item, True
    if isinstance(annotation, type) and issubclass(annotation, _Section):
        return annotation, False
    return None, False


def _valid_part(
    model: type[_Section], raw: Any, errors: list[tuple[Any, ...]], path: str, problems: list[str]
) -> Any:
    """Return the valid fields of `raw` as attributes of an object, and add to `problems` what
    `compare_fields` finds in each section whose other fields failed validation.

    `errors` are the locations of the validation errors inside `raw`. Returns None when `raw`
    is not a mapping.
    """
    if not isinstance(raw, dict):
        return None
    if not errors:
        return model.model_validate(raw)
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        inner = [loc[1:] for loc in errors if loc[:1] == (name,)]
        if name not in raw:
            if not inner and not info.is_required():
                fields[name] = info.get_default(call_default_factory=True)
            continue
        if not inner:
            fields[name] = _field_adapter(model, name).validate_python(raw[name])
            continue
        section, is_list = _section_in(info.annotation)
        field_path = f"{path}.{name}" if path else name
        if section is not None and is_list and isinstance(raw[name], list):
            fields[name] = [
                _valid_part(
                    section,
                    item,
                    [loc[1:] for loc in inner if loc[:1] == (index,)],
                    f"{field_path}[{index}]",
                    problems,
                )
                for index, item in enumerate(raw[name])
            ]
        elif section is not None and not is_list:
            part = _valid_part(section, raw[name], inner, field_path, problems)
            if part is not None:
                fields[name] = part
    part = SimpleNamespace(**fields)
    # An error located at the section itself comes from `compare_fields`, which therefore ran.
    if all(errors):
        problems += [_join_path(path, line) for line in model.compare_fields(part)]
    return part


def _comparison_problems(data: dict[str, Any], error: ValidationError) -> list[str]:
    """Return the problems that checks comparing valid fields find in an invalid manifest.

    Pydantic runs such a check only when the whole section validates, so without this step a
    problem such as a name in an unlisted language would surface only in a later run.
    """
    problems: list[str] = []
    _valid_part(Manifest, data, [tuple(item["loc"]) for item in error.errors()], "", problems)
    return problems


# --- loading --------------------------------------------------------------------------------


def parse_manifest(
    data: Any,
    *,
    source: str | None = None,
    document: YamlDocument | None = None,
    stored: bool = False,
) -> Manifest:
    """Validate already-parsed manifest data; raise `ManifestError` listing every problem.

    `document` is the YAML reading of `data`, when it came from a file: its own problems
    (such as a key written twice) are reported with the others. `stored` True reads a
    manifest that onboarding already accepted, and skips the checks added since then that
    would otherwise stop its tenant from loading.
    """
    early = list(document.problems) if document is not None else []
    if not isinstance(data, dict):
        raise ManifestError(
            [*early, "the document must be a mapping of manifest fields"], source=source
        )
    try:
        manifest = Manifest.model_validate(data, context={"stored": stored})
    except ValidationError as exc:
        written = document.non_text_scalars if document is not None else {}
        problems = _format_errors(exc, written) + _comparison_problems(data, exc)
        raise ManifestError(_name_services(early + problems, data), source=source) from None
    if early:
        raise ManifestError(_name_services(early, data), source=source)
    return manifest


_SERVICE_PATH = re.compile(r"^services\[(\d+)\]")


def _name_services(problems: list[str], data: dict[str, Any]) -> list[str]:
    """Add the service code to each path inside `services[N]`, such as
    `services[3] (code SLO).sla_hours`, when that service has a valid code."""
    services = data.get("services")
    if not isinstance(services, list):
        return problems

    def named(match: re.Match[str]) -> str:
        index = int(match.group(1))
        service = services[index] if index < len(services) else None
        code = service.get("code") if isinstance(service, dict) else None
        if not isinstance(code, str) or not SERVICE_CODE.match(code.strip()):
            return match.group(0)
        return f"{match.group(0)} (code {code.strip()})"

    return [_SERVICE_PATH.sub(named, problem, count=1) for problem in problems]


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a YAML manifest file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(
            f"manifest file not found: {path}; check the path", code="not_found"
        ) from None
    except IsADirectoryError:
        raise InvalidInput(
            f"{path} is a folder, not a manifest file; give the path of a YAML file in it"
        ) from None
    except UnicodeDecodeError:
        raise InvalidInput(
            f"{path} is not UTF-8 text; save the manifest as a UTF-8 YAML file"
        ) from None
    except OSError as exc:
        raise InvalidInput(
            f"cannot read the manifest file {path} ({exc.strerror or type(exc).__name__}); "
            "check the path and its permissions"
        ) from None
    try:
        document = read_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ManifestError([f"not valid YAML{where}: {problem}"], source=str(path)) from None
    return parse_manifest(document.data, source=str(path), document=document)


EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


def example_paths() -> list[Path]:
    """Return the example manifests shipped with the package."""
    return sorted(EXAMPLES_DIR.glob("*.yaml"))
