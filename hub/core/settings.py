"""The one typed settings object, read from `HUB_*` environment variables."""

from __future__ import annotations

import os
import re
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from hub.core.errors import ConfigurationError

Environment = Literal["development", "test", "production"]
# The SQLAlchemy drivers the hub is built and tested on.
SUPPORTED_DATABASE_DRIVERS = ("postgresql+psycopg", "sqlite")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
CORS_ORIGIN_RULE = (
    "write each origin as scheme://host or scheme://host:port with http or https and no "
    "path, such as https://app.example.org, separated by commas, or * alone for any origin"
)
# A host name of letters, digits and hyphens between dots, or an IPv6 address in brackets.
_ORIGIN_HOST = re.compile(r"^(?:[a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Settings(BaseSettings):
    """Hub configuration.

    With no variables set, the hub runs the embedded default: SQLite and kombu's SQLAlchemy
    transport under `./var/`, a root key file created there on first use.
    """

    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore")

    env: Environment = "development"
    var_dir: Path = Path("var")
    database_url: str = ""
    broker_url: str = ""
    root_key_file: Path | None = None

    # Number of outbox rows the relay publishes per round, and its idle poll interval in seconds.
    outbox_batch_size: int = Field(default=500, ge=1, le=10_000)
    outbox_poll_seconds: float = Field(default=0.5, gt=0, le=60)

    # Threads per API process for endpoints that block on the database. Above about 8, the
    # threads spend more time waiting for Python's global lock than for the database.
    api_threads: int = Field(default=8, ge=1, le=200)

    # Largest request body the API reads, in bytes. A larger body gets 413.
    max_body_bytes: int = Field(default=1_000_000, ge=1024)

    log_level: str = "INFO"
    log_json: bool | None = None

    # Name that `hub` commands record as the person acting (`cli:NAME` in audit entries) when
    # no `hub --as NAME` is given. Empty means the OS user name. Checked where it is used.
    operator: str = ""

    # Origins whose browser apps may call the Open311 API (CORS), as browsers write them in
    # the Origin header, or ("*",) for any origin. Empty sends no CORS headers. NoDecode
    # keeps pydantic-settings from parsing the variable as JSON, because it is a
    # comma-separated list.
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()

    # Whether residents' alert webhooks and Web Push endpoints may use loopback, private and
    # other non-public addresses (`hub.core.public_hosts`), for development and tests that
    # deliver to a receiver on the same machine. With it on, anyone holding a city's Open311
    # key can make the hub send requests into its own network.
    alert_webhooks_allow_private: bool = False

    @field_validator("var_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        if not value:
            return value
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(
                "not a database URL; use postgresql+psycopg://USER@HOST:PORT/DB or sqlite:///PATH"
            ) from None
        if url.drivername not in SUPPORTED_DATABASE_DRIVERS:
            raise ValueError(
                f"the hub runs on {' or '.join(SUPPORTED_DATABASE_DRIVERS)}, not "
                f"{url.drivername}; use postgresql+psycopg://USER@HOST:PORT/DB"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"unknown log level; use one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _cors_origins(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, list | tuple):
            return value  # pydantic rejects it as not a tuple
        origins: list[str] = []
        for item in value:
            origin = cors_origin(str(item).strip())
            if origin and origin not in origins:
                origins.append(origin)
        if "*" in origins and len(origins) > 1:
            raise ValueError("* allows any origin, so give it alone or list the origins instead")
        return tuple(origins)

    # Cached because `get_engine()` reads it on every call and resolving the path costs a
    # filesystem lookup. A changed environment takes effect through `reset_settings_cache()`.
    @cached_property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'hub.db').resolve()}"

    @property
    def effective_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        return f"sqla+sqlite:///{(self.var_dir / 'broker.db').resolve()}"

    @property
    def effective_root_key_file(self) -> Path:
        return self.root_key_file or (self.var_dir / "root.key")

    @property
    def is_embedded(self) -> bool:
        """True when the database is SQLite, so API and worker share one process."""
        return self.effective_database_url.startswith("sqlite")

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def uses_rabbitmq(self) -> bool:
        return self.effective_broker_url.startswith(("amqp", "pyamqp"))

    def ensure_var_dir(self) -> None:
        """Create the var folder, or raise ConfigurationError naming HUB_VAR_DIR.

        A new var folder is readable by its owner only (0700), and an existing one keeps its mode.
        The SQLite files in it are created 0600 when first opened (`create_private_file`).
        """
        try:
            self.var_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"HUB_VAR_DIR={self.var_dir}: cannot create the folder "
                f"({exc.strerror or type(exc).__name__}); set HUB_VAR_DIR to a folder the hub "
                "can write to"
            ) from None


def create_private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 unless it exists."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(descriptor)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the settings from the environment or raise ConfigurationError naming bad values."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = [
            f"{_variable(error['loc'])}={_shown(error.get('input'))}: "
            + error["msg"].removeprefix("Value error, ")
            for error in exc.errors()
        ]
        raise ConfigurationError(
            "invalid setting " + "; ".join(problems) + "; correct or unset the variable"
        ) from None


def cors_origin(text: str) -> str:
    """Return an origin in the form browsers send in the Origin header: scheme and host in
    lower case, without a default port or a trailing slash. "" and "*" stay as they are.

    Raises ValueError naming `text` when it is not an http or https origin, except when it
    contains `@`: user information may hold a password, which the message must not repeat.
    """
    if text in ("", "*"):
        return text
    if "@" in text:
        raise ValueError(f"an origin has no user name or password; {CORS_ORIGIN_RULE}")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r} is not an origin; {CORS_ORIGIN_RULE}") from None
    scheme = parts.scheme.lower()
    netloc = parts.netloc.lower()
    host = netloc.rsplit(":", 1)[0] if port is not None else netloc
    valid = (
        scheme in _DEFAULT_PORTS
        and _ORIGIN_HOST.match(host) is not None
        and parts.path in ("", "/")
        and not parts.query
        and not parts.fragment
        and "?" not in text
        and "#" not in text
    )
    if not valid:
        raise ValueError(f"{text!r} is not an origin; {CORS_ORIGIN_RULE}")
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _shown(value: object) -> str:
    """Return a rejected value for the error message, with any password in a URL masked."""
    text = str(value)
    if "@" in text and "://" in text:
        try:
            text = make_url(text).render_as_string(hide_password=True)
        except ArgumentError:
            return "(a URL that could not be parsed)"
    return repr(text)


def _variable(location: tuple[int | str, ...]) -> str:
    return "HUB_" + str(location[0]).upper() if location else "a HUB_ variable"


def reset_settings_cache() -> None:
    """Forget the cached settings so the next `get_settings()` rereads the environment."""
    get_settings.cache_clear()
