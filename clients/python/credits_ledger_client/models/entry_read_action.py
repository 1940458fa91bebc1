from enum import StrEnum


class EntryReadAction(StrEnum):
    CREDIT = "credit"
    DEBIT = "debit"
    HOLD_CAPTURED = "hold_captured"
    HOLD_EXPIRED = "hold_expired"
    HOLD_PLACED = "hold_placed"
    HOLD_RELEASED = "hold_released"

    def __str__(self) -> str:
        return str(self.value)
