"""The writer process of ``ledger serve --workers N`` (decision 0035): one process owns
the ledger's committer; the API workers send it their write commands over a Unix socket."""
