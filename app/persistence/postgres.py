"""PostgreSQL as the library configures it, with every wait bounded.

The library's factory takes a pool wait (``POSTGRES_CONNECT_TIMEOUT``) and a lock
timeout, but no timeout for establishing a connection (libpq waits as long as TCP does)
and none for a statement. Selected with
``PERSISTENCE_MODULE=app.persistence.postgres:LedgerPostgresFactory``; it reads one more
key, ``POSTGRES_STATEMENT_TIMEOUT`` (seconds), and gives libpq the pool's wait
(``POSTGRES_CONNECT_TIMEOUT``) as its connect timeout.
"""

from eventsourcing.postgres import PostgresFactory
from eventsourcing.utils import Environment

from app.compat import postgres_connection_kwargs

STATEMENT_TIMEOUT_KEY = "POSTGRES_STATEMENT_TIMEOUT"


class LedgerPostgresFactory(PostgresFactory):
    def __init__(self, env: Environment) -> None:
        super().__init__(env)
        kwargs = postgres_connection_kwargs(self.datastore)
        connect_timeout = self.env.get(self.POSTGRES_CONNECT_TIMEOUT)
        if connect_timeout:
            kwargs["connect_timeout"] = int(connect_timeout)
        statement_timeout = self.env.get(STATEMENT_TIMEOUT_KEY)
        if statement_timeout:
            kwargs["options"] = f"-c statement_timeout={int(statement_timeout) * 1000}"
