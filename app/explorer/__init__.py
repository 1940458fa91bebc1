"""The ledger explorer: server-rendered pages at ``/explorer`` where support staff see
why a balance is what it is (sign in with a ``read`` key)."""
