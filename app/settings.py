"""The one place that reads the environment."""

from functools import cached_property
from pathlib import Path
from typing import Final

from pydantic import Field, SecretStr
from pydantic import ValidationError as SettingsValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.persistence.stores import STORE_TIMEOUT_SECONDS, event_store_env, sqlite_url

# The projections child gives way to the API process for the CPU (decision 0013).
PROJECTIONS_NICE_DEFAULT: Final = 10


class ConfigurationError(Exception):
    """A setting's value cannot be used; the message says which setting and why."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEDGER_", extra="ignore")

    data_dir: Path = Field(default=Path("./var"), description="Embedded SQLite files live here")
    event_store: str | None = Field(
        default=None,
        description="sqlite:///PATH, postgresql://USER:PASS@HOST:PORT/DB or memory://",
    )
    read_model: str | None = Field(
        default=None, description="sqlite:///PATH or postgresql://… for the projections"
    )

    read_wait_seconds: float = Field(
        default=5.0, ge=0, le=60, description="How long a read waits for min_position"
    )
    ready_lag_seconds_max: float = Field(
        default=30.0, gt=0, description="Readiness fails when the views lag more than this"
    )
    request_body_bytes_max: int = Field(default=2_000_000, gt=0)
    store_timeout_seconds: int = Field(
        default=STORE_TIMEOUT_SECONDS,
        ge=1,
        le=300,
        description="Bound on every wait for the event store: SQLite's lock wait, "
        "PostgreSQL's connect/pool/lock/statement timeouts, KurrentDB's call deadline",
    )
    write_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="How long a write waits (queued and being written) before answering "
        "write_timeout or outcome_unknown",
    )
    write_queue_max: int = Field(
        default=20_000,
        gt=0,
        description="Transfers waiting for the writer at most; beyond it writes are "
        "refused at once with overloaded",
    )
    projections_nice: int = Field(
        default=PROJECTIONS_NICE_DEFAULT,
        ge=0,
        le=19,
        description="CPU niceness of the projections child of `ledger serve` on the embedded "
        "default: the write path first, the views catch up in larger batches (decision 0013)",
    )
    log_format: str = Field(default="json", pattern="^(json|console)$")
    bootstrap_admin_key: SecretStr | None = Field(
        default=None,
        description="On first start (no key yet), store this admin key instead of making one",
    )
    bootstrap_admin_key_file: Path | None = Field(
        default=None, description="The same, read from a file (a mounted Docker secret)"
    )

    @classmethod
    def load(cls) -> "Settings":
        """The settings from the environment, or one ConfigurationError naming the
        first variable that is wrong."""
        try:
            return cls()
        except SettingsValidationError as error:
            first = error.errors()[0]
            name = "LEDGER_" + str(first["loc"][0]).upper() if first["loc"] else "LEDGER_*"
            raise ConfigurationError(
                f"{name}={first.get('input')!r} is not usable: {first['msg']}"
            ) from None

    def bootstrap_key(self) -> str | None:
        """The operator's first admin key, from the variable or the file, if given."""
        if self.bootstrap_admin_key is not None:
            return self.bootstrap_admin_key.get_secret_value().strip()
        if self.bootstrap_admin_key_file is None:
            return None
        try:
            return self.bootstrap_admin_key_file.read_text().strip()
        except OSError as error:
            path = str(self.bootstrap_admin_key_file)
            raise ConfigurationError(
                f"cannot read LEDGER_BOOTSTRAP_ADMIN_KEY_FILE={path!r}: {error.strerror}"
            ) from None

    @property
    def event_store_setting(self) -> str:
        """The variable the event store's URL comes from (for messages)."""
        return "LEDGER_EVENT_STORE" if self.event_store else "LEDGER_DATA_DIR"

    @property
    def read_model_setting(self) -> str:
        return "LEDGER_READ_MODEL" if self.read_model else "LEDGER_DATA_DIR"

    # Events: the feed's stream and webhook deliveries (docs/events.md).
    event_streams_max: int = Field(
        default=100, ge=1, le=10_000, description="Open event streams past which 503"
    )
    event_stream_keepalive_seconds: float = Field(default=15.0, gt=0, le=300)
    event_wait_seconds_max: float = Field(
        default=30.0, ge=0, le=30, description="Longest a feed long-poll waits"
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="Per delivery call: connect, send and answer"
    )
    webhook_retry_base_seconds: float = Field(
        default=5.0, gt=0, description="First retry delay; doubles per failure"
    )
    webhook_retry_cap_seconds: float = Field(default=3600.0, gt=0)
    webhook_failures_max: int = Field(
        default=20, ge=1, le=1000, description="Consecutive failures that disable an endpoint"
    )

    @cached_property
    def keys_url(self) -> str:
        """API keys live beside the read model (never in a disposable view generation)."""
        if self.read_model and not self.read_model.startswith("sqlite"):
            return self.read_model
        return sqlite_url(self.data_dir.resolve() / "keys.sqlite")

    @cached_property
    def event_store_url(self) -> str:
        return self.event_store or sqlite_url(self.data_dir.resolve() / "events.sqlite")

    @cached_property
    def read_model_url(self) -> str:
        return self.read_model or sqlite_url(self.data_dir.resolve() / "views.sqlite")

    @cached_property
    def last_audit_path(self) -> Path:
        """Where ``ledger audit`` leaves its last result for the explorer."""
        return self.data_dir.resolve() / "last-audit.json"

    @cached_property
    def explorer_sessions_path(self) -> Path:
        """The explorer's server-side sessions (shared by all API processes)."""
        return self.data_dir.resolve() / "explorer-sessions"

    def ledger_env(self) -> dict[str, str]:
        env = event_store_env(self.event_store_url, self.store_timeout_seconds)
        env["LEDGER_WRITE_TIMEOUT_SECONDS"] = str(self.write_timeout_seconds)
        env["LEDGER_WRITE_QUEUE_MAX"] = str(self.write_queue_max)
        return env
