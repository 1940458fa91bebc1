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

    @cached_property
    def event_store_url(self) -> str:
        return self.event_store or sqlite_url(self.data_dir.resolve() / "events.sqlite")

    @cached_property
    def read_model_url(self) -> str:
        return self.read_model or sqlite_url(self.data_dir.resolve() / "views.sqlite")

    def ledger_env(self) -> dict[str, str]:
        return event_store_env(self.event_store_url)
