"""The one place that reads the environment."""

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.persistence.stores import event_store_env, sqlite_url


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
    log_format: str = Field(default="json", pattern="^(json|console)$")

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

    def ledger_env(self) -> dict[str, str]:
        return event_store_env(self.event_store_url)
