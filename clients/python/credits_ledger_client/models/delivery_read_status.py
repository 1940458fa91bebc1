from enum import StrEnum


class DeliveryReadStatus(StrEnum):
    ABANDONED = "abandoned"
    DELIVERED = "delivered"
    FAILING = "failing"

    def __str__(self) -> str:
        return str(self.value)
