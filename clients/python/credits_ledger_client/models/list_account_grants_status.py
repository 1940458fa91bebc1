from enum import StrEnum


class ListAccountGrantsStatus(StrEnum):
    ALL = "all"
    CONSUMED = "consumed"
    EXPIRED = "expired"
    LIVE = "live"

    def __str__(self) -> str:
        return str(self.value)
