"""Old import paths of the read model, kept so that existing callers keep working.

New code imports the port (``app.application.read_model``) or the module that does the
job: ``projections.schema``, ``projections.projection``, ``projections.reader``,
``projections.backends``.
"""

from app.application.read_model import PAGE_SIZE_MAX
from app.application.views import AccountView, StatementLine, TransferView
from projections.backends import LedgerView, PostgresLedgerView, SQLiteLedgerView
from projections.reader import entry_amount
from projections.schema import APPLICATION_NAME, Cursor, parse_timestamp, timestamp_text

LedgerViewMixin = LedgerView
BalanceRow = AccountView
EntryRow = StatementLine
TransferRow = TransferView

__all__ = [
    "APPLICATION_NAME",
    "PAGE_SIZE_MAX",
    "BalanceRow",
    "Cursor",
    "EntryRow",
    "LedgerViewMixin",
    "PostgresLedgerView",
    "SQLiteLedgerView",
    "TransferRow",
    "entry_amount",
    "parse_timestamp",
    "timestamp_text",
]
