"""One test per seam of app/compat.py: each fails loudly if a library upgrade moves it."""

from eventsourcing.postgres import PostgresDatastore

from app.compat import postgres_connection_kwargs


def test_the_postgres_pool_exposes_the_kwargs_of_its_future_connections() -> None:
    datastore = PostgresDatastore(dbname="ledger", host="127.0.0.1", port=1, user="u", password="p")
    kwargs = postgres_connection_kwargs(datastore)
    assert kwargs["dbname"] == "ledger"
    kwargs["connect_timeout"] = 3
    assert postgres_connection_kwargs(datastore)["connect_timeout"] == 3
