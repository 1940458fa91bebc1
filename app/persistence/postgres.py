"""PostgreSQL as the library configures it, with every wait bounded.

The library's factory takes a pool wait (``POSTGRES_CONNECT_TIMEOUT``) and a lock
timeout, but no timeout for establishing a connection (libpq waits as long as TCP does)
and none for a statement. Selected with
``PERSISTENCE_MODULE=app.persistence.postgres:LedgerPostgresFactory``; it reads one more
key, ``POSTGRES_STATEMENT_TIMEOUT`` (seconds), which bounds both.
"""

from eventsourcing.postgres import PostgresFactory
from eventsourcing.utils import Environment

from app.compat import postgres_connection_kwargs

STATEMENT_TIMEOUT_KEY = "POSTGRES_STATEMENT_TIMEOUT"


class LedgerPostgresFactory(PostgresFactory):
    def __init__(self, env: Environment) -> None:
        super().__init__(env)
        timeout = self.env.get(STATEMENT_TIMEOUT_KEY)
        if timeout:
            seconds = int(timeout)
            kwargs = postgres_connection_kwargs(self.datastore)
            kwargs["connect_timeout"] = seconds
            kwargs["options"] = f"-c statement_timeout={seconds * 1000}"
