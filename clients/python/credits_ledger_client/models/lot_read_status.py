from enum import StrEnum


class LotReadStatus(StrEnum):
    CONSUMED = "consumed"
    EXPIRED = "expired"
    LIVE = "live"

    def __str__(self) -> str:
        return str(self.value)
