from enum import StrEnum


class ListAccountsStatusType1(StrEnum):
    CLOSED = "closed"
    OPEN = "open"

    def __str__(self) -> str:
        return str(self.value)
