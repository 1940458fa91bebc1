from enum import StrEnum


class EventType(StrEnum):
    ACCOUNT_CLOSED = "account.closed"
    ACCOUNT_OPENED = "account.opened"
    ACCOUNT_UPDATED = "account.updated"
    BALANCE_THRESHOLD_CROSSED = "balance.threshold_crossed"
    GRANT_CREATED = "grant.created"
    GRANT_EXPIRED = "grant.expired"
    TRANSFER_EXPIRED = "transfer.expired"
    TRANSFER_POSTED = "transfer.posted"
    TRANSFER_RECORDED = "transfer.recorded"
    TRANSFER_REVERSED = "transfer.reversed"
    TRANSFER_VOIDED = "transfer.voided"
    WEBHOOK_DISABLED = "webhook.disabled"

    def __str__(self) -> str:
        return str(self.value)
