from enum import StrEnum


class AccountType(StrEnum):
    ASSET = "asset"
    EQUITY = "equity"
    EXPENSE = "expense"
    INCOME = "income"
    LIABILITY = "liability"

    def __str__(self) -> str:
        return str(self.value)
