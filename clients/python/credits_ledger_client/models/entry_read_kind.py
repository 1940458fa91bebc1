from enum import StrEnum


class EntryReadKind(StrEnum):
    CREDITED = "Credited"
    CREDITHOLDSETTLED = "CreditHoldSettled"
    CREDITRESERVED = "CreditReserved"
    DEBITED = "Debited"
    DEBITHOLDSETTLED = "DebitHoldSettled"
    DEBITRESERVED = "DebitReserved"

    def __str__(self) -> str:
        return str(self.value)
