from enum import StrEnum


class MonitorCreateField(StrEnum):
    AVAILABLE = "available"
    BALANCE = "balance"

    def __str__(self) -> str:
        return str(self.value)
