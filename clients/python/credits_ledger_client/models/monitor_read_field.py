from enum import StrEnum


class MonitorReadField(StrEnum):
    AVAILABLE = "available"
    BALANCE = "balance"

    def __str__(self) -> str:
        return str(self.value)
