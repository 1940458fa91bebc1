from enum import StrEnum


class GrantReadCategory(StrEnum):
    PAID = "paid"
    PROMOTIONAL = "promotional"

    def __str__(self) -> str:
        return str(self.value)
