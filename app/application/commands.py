"""Commands: imperative, checked once before the domain sees them.

Two edges build them, and each runs the rules once:

- Python callers build them with any values at all (positionally, with
  ``dataclasses.replace``, invalid on purpose); the ledger calls ``checked()``, which runs
  every rule, field by field, then across fields, and refuses with the domain's codes.
- The HTTP API's body models (app/api/schemas.py) enforce each field's rule while parsing
  (their constraints come from the same ``app.domain.limits``; tests/unit/test_edge_rules.py
  proves both accept exactly the same values) and build the command with
  ``checked_across_fields()``: it runs the rules across fields (the same functions
  ``checked()`` runs) and marks the command checked, so the ledger's ``checked()`` trusts it.

The verbs on an existing transfer or account (post, void, reverse, update) name it by an
id in the HTTP path, which no parser checks: their body models build the command with
``checked_beyond_body()``, which checks that id (and any rule the body's schema cannot
state) once and marks the command; their plain-argument ledger methods build the same
command and ``checked()`` it, for Python callers.

The mark lives on the instance only: ``dataclasses.replace`` or any other new instance is
unmarked and checked again. Marking freezes the command's mappings (its metadata, an
update's changes) into read-only copies: what was checked is what is written, whatever
the caller does afterwards with the dict it passed or with the command.
"""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, ClassVar, Final, Self

from app.domain.account import ACCOUNT_TYPES
from app.domain.errors import SameAccountError, TimeRangeError, ValidationError
from app.domain.lots import CATEGORY_DEFAULT, PRIORITY_DEFAULT, Category, check_grant_terms
from app.domain.values import (
    LEDGER_TRANSFER_PREFIXES,
    check_amount,
    check_id,
    check_metadata,
    check_metadata_changes,
    check_overdraft_limit,
    check_timeout_seconds,
    check_unit,
    is_breakage_transfer_id,
)

_NOTHING: Final[Mapping[Any, Any]] = MappingProxyType({})
_new_object: Final = object.__new__
_set_attribute: Final = object.__setattr__


def frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy of ``mapping``: neither it nor the caller's original can change it."""
    return MappingProxyType(dict(mapping)) if mapping else _NOTHING


class Checked:
    """A command that knows whether its rules have passed (see the module's docstring)."""

    _rules_passed: ClassVar[bool] = False
    _mappings: ClassVar[tuple[str, ...]] = ()  # its fields frozen when it is marked

    def is_checked(self) -> bool:
        return self._rules_passed

    def _marked(self) -> Self:
        for name in self._mappings:  # frozen dataclasses: set here only
            object.__setattr__(self, name, frozen(getattr(self, name)))
        object.__setattr__(self, "_rules_passed", True)
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its fields (its frozen mappings as dicts) and its mark: the writer
        process of ``serve --workers N`` gets the command an API worker checked, still
        marked checked (``app/writer/wire.py``)."""
        fields = {name: getattr(self, name) for name in _field_names(type(self))}
        for name in self._mappings:
            fields[name] = dict(fields[name])
        return (_rebuilt, (type(self), fields, self._rules_passed))


# Each command class's field names (``_field_names``).
_FIELD_NAMES: Final[dict[type, tuple[str, ...]]] = {}


def _field_names(cls: type[Checked]) -> tuple[str, ...]:
    """A command class's field names, read once (``dataclasses.fields`` builds its
    answer anew at each call, for every command the writer process is sent)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        assert dataclasses.is_dataclass(cls), "commands are dataclasses"
        names = _FIELD_NAMES[cls] = tuple(item.name for item in dataclasses.fields(cls))
    return names


def _rebuilt(cls: type[Checked], fields: dict[str, Any], checked: bool) -> Checked:
    """A pickled command again (``Checked.__reduce__``), marked as it was."""
    if not (isinstance(cls, type) and issubclass(cls, Checked)):
        raise TypeError(f"{cls!r} is not a command")
    command = cls(**fields)
    return command._marked() if checked else command


# The rules across fields: each runs once per command, from checked() or from an edge
# whose parser already enforced every field (checked_across_fields).


def refuse_pending_grant(pending: object, grant: object) -> None:
    if grant is not None and pending:
        raise ValidationError(
            "a grant cannot be pending: its lot opens when it is recorded", field="grant"
        )


def check_grant_window(expires_at: datetime | None, effective_at: datetime | None) -> None:
    if expires_at is not None and effective_at is not None and expires_at <= effective_at:
        raise TimeRangeError(
            "grant.expires_at must be after grant.effective_at", field="grant.expires_at"
        )


def refuse_timeout_unless_pending(pending: bool, timeout_seconds: object) -> None:
    if timeout_seconds is not None and not pending:
        raise ValidationError(
            "timeout_seconds applies only to pending transfers", field="timeout_seconds"
        )


def refuse_ledger_transfer_id(transfer_id: str) -> None:
    if is_breakage_transfer_id(transfer_id):
        raise ValidationError(
            f"ids starting with {' or '.join(LEDGER_TRANSFER_PREFIXES)} are the ledger's own",
            field="id",
        )


def refuse_same_account(debit_account_id: str, credit_account_id: str) -> None:
    if debit_account_id == credit_account_id:
        raise SameAccountError(
            "debit_account_id and credit_account_id must differ", account_id=debit_account_id
        )


@dataclass(frozen=True)
class OpenAccount(Checked):
    id: str
    unit: str
    allow_negative: bool = False
    overdraft_limit: int = 0
    metadata: Mapping[str, str] = field(default_factory=dict)
    account_type: str | None = None  # None: default_account_type(allow_negative)

    _mappings: ClassVar[tuple[str, ...]] = ("metadata",)

    def checked_across_fields(self) -> "OpenAccount":
        """This command, marked checked, for an edge whose parser enforced each field's
        rule (an account has no rule across fields)."""
        return self._marked()

    def checked(self) -> "OpenAccount":
        if self.is_checked():
            return self
        if not isinstance(self.allow_negative, bool):
            raise ValidationError("allow_negative must be a boolean", field="allow_negative")
        if self.account_type is not None and self.account_type not in ACCOUNT_TYPES:
            raise ValidationError(
                f"account_type must be one of {', '.join(ACCOUNT_TYPES)}", field="account_type"
            )
        return OpenAccount(
            id=check_id(self.id, "id"),
            unit=check_unit(self.unit),
            allow_negative=self.allow_negative,
            overdraft_limit=check_overdraft_limit(self.overdraft_limit),
            metadata=check_metadata(self.metadata),
            account_type=self.account_type,
        )._marked()


@dataclass(frozen=True)
class GrantTerms(Checked):
    """A grant's body: the lot a transfer opens in its credit account."""

    expires_at: datetime | None = None
    effective_at: datetime | None = None
    priority: int = PRIORITY_DEFAULT
    category: Category = CATEGORY_DEFAULT

    def checked(self) -> "GrantTerms":
        if self.is_checked():
            return self
        priority, category = check_grant_terms(self.priority, self.category)
        for name, moment in (("expires_at", self.expires_at), ("effective_at", self.effective_at)):
            if moment is not None and (not isinstance(moment, datetime) or moment.tzinfo is None):
                raise ValidationError(
                    f"grant.{name} must be a time with its UTC offset", field=f"grant.{name}"
                )
        check_grant_window(self.expires_at, self.effective_at)
        return GrantTerms(self.expires_at, self.effective_at, priority, category)._marked()

    def requested(self) -> dict[str, Any]:
        """As a transfer records what was asked (the idempotent part of the body)."""
        return {
            "expires_at": self.expires_at,
            "requested_effective_at": self.effective_at,
            "priority": self.priority,
            "category": self.category,
        }


@dataclass(frozen=True)
class RecordTransfer(Checked):
    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    pending: bool = False
    timeout_seconds: int | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    grant: GrantTerms | None = None

    _mappings: ClassVar[tuple[str, ...]] = ("metadata",)

    def checked_across_fields(self) -> "RecordTransfer":
        """This command, marked checked, for an edge whose parser enforced each field's
        rule and built it (with its metadata sorted): runs the rules across fields, in
        ``checked()``'s order."""
        refuse_pending_grant(self.pending, self.grant)
        if self.grant is not None:
            check_grant_window(self.grant.expires_at, self.grant.effective_at)
            self.grant._marked()
        refuse_timeout_unless_pending(self.pending, self.timeout_seconds)
        refuse_ledger_transfer_id(self.id)
        refuse_same_account(self.debit_account_id, self.credit_account_id)
        return self._marked()

    @classmethod
    def plain_checked(
        cls, transfer_id: str, debit_account_id: str, credit_account_id: str, amount: int
    ) -> "RecordTransfer":
        """``RecordTransfer(...).checked_across_fields()`` for a plain transfer (no hold,
        grant or metadata) from an edge whose parser enforced each field: the same rules
        run, and the same instance state, set in one step instead of the frozen
        dataclass's call per field (a batch of 1,000 built its commands in a
        quarter of the event loop's time for it). ``tests/unit/test_plain_commands.py``
        holds the two equal."""
        # Its rules, in checked_across_fields' order (the grant's window needs a grant).
        refuse_pending_grant(False, None)
        refuse_timeout_unless_pending(False, None)
        refuse_ledger_transfer_id(transfer_id)
        refuse_same_account(debit_account_id, credit_account_id)
        command = _new_object(cls)
        _set_attribute(
            command,
            "__dict__",
            {
                "id": transfer_id,
                "debit_account_id": debit_account_id,
                "credit_account_id": credit_account_id,
                "amount": amount,
                "pending": False,
                "timeout_seconds": None,
                "metadata": _NOTHING,
                "grant": None,
                "_rules_passed": True,
            },
        )
        return command

    def checked(self) -> "RecordTransfer":
        if self.is_checked():
            return self
        if self.grant is not None and not isinstance(self.grant, GrantTerms):
            raise ValidationError("grant must be an object", field="grant")
        refuse_pending_grant(self.pending, self.grant)
        grant = None if self.grant is None else self.grant.checked()
        if not isinstance(self.pending, bool):
            raise ValidationError("pending must be a boolean", field="pending")
        refuse_timeout_unless_pending(self.pending, self.timeout_seconds)
        timeout_seconds = self.timeout_seconds
        if timeout_seconds is not None:
            timeout_seconds = check_timeout_seconds(timeout_seconds)
        command = RecordTransfer(
            id=check_id(self.id, "id"),
            debit_account_id=check_id(self.debit_account_id, "debit_account_id"),
            credit_account_id=check_id(self.credit_account_id, "credit_account_id"),
            amount=check_amount(self.amount),
            pending=self.pending,
            timeout_seconds=timeout_seconds,
            metadata=check_metadata(self.metadata),
            grant=grant,
        )
        refuse_ledger_transfer_id(command.id)
        refuse_same_account(command.debit_account_id, command.credit_account_id)
        return command._marked()


# The verbs on an existing transfer or account: the id comes from the HTTP path.


@dataclass(frozen=True)
class PostPendingTransfer(Checked):
    """Post a hold, whole (``amount`` None) or a smaller amount."""

    transfer_id: str
    amount: int | None = None

    def checked_beyond_body(self) -> "PostPendingTransfer":
        """For an edge whose parser enforced the body's fields: the path's id, once."""
        check_id(self.transfer_id, "transfer_id")
        return self._marked()

    def checked(self) -> "PostPendingTransfer":
        if self.is_checked():
            return self
        transfer_id = check_id(self.transfer_id, "transfer_id")
        amount = None if self.amount is None else check_amount(self.amount)
        return PostPendingTransfer(transfer_id, amount)._marked()


@dataclass(frozen=True)
class VoidPendingTransfer(Checked):
    transfer_id: str

    def checked_beyond_body(self) -> "VoidPendingTransfer":
        """For an edge (the body is empty): the path's id, once."""
        check_id(self.transfer_id, "transfer_id")
        return self._marked()

    def checked(self) -> "VoidPendingTransfer":
        if self.is_checked():
            return self
        return VoidPendingTransfer(check_id(self.transfer_id, "transfer_id"))._marked()


@dataclass(frozen=True)
class RecordReversal(Checked):
    """Reverse (refund) the posted transfer ``transfer_id`` by a new transfer ``id``."""

    transfer_id: str
    id: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    amount: int | None = None  # None: all of what it moved (a grant: what is left)

    _mappings: ClassVar[tuple[str, ...]] = ("metadata",)

    def checked_beyond_body(self) -> "RecordReversal":
        """For an edge whose parser enforced the body's fields (and sorted its
        metadata): the path's id, and the ledger's own prefixes, which the body's
        schema does not state, once each."""
        check_id(self.transfer_id, "transfer_id")
        refuse_ledger_transfer_id(self.id)
        return self._marked()

    def checked(self) -> "RecordReversal":
        if self.is_checked():
            return self
        transfer_id = check_id(self.transfer_id, "transfer_id")
        reversal_id = check_id(self.id, "id")
        refuse_ledger_transfer_id(reversal_id)
        metadata = check_metadata(self.metadata)
        amount = None if self.amount is None else check_amount(self.amount)
        return RecordReversal(transfer_id, reversal_id, metadata, amount)._marked()


@dataclass(frozen=True)
class UpdateAccountMetadata(Checked):
    """Merge ``changes`` into an account's metadata (JSON Merge Patch: None removes a
    key). How many entries the merged whole may hold is the account's own rule."""

    account_id: str
    changes: Mapping[str, str | None]

    _mappings: ClassVar[tuple[str, ...]] = ("changes",)

    def checked_beyond_body(self) -> "UpdateAccountMetadata":
        """For an edge whose parser enforced the body's fields: the path's id, once."""
        check_id(self.account_id, "account_id")
        return self._marked()

    def checked(self) -> "UpdateAccountMetadata":
        if self.is_checked():
            return self
        account_id = check_id(self.account_id, "account_id")
        return UpdateAccountMetadata(account_id, check_metadata_changes(self.changes))._marked()
