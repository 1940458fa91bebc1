"""One rule set, two edges: a request body the HTTP models accept gives exactly the command
a Python caller's ``checked()`` gives for the same values, and a body they refuse is one
``checked()`` refuses too (with the same code when the refusal is a rule across fields).

The HTTP edge checks each field while parsing (pydantic constraints built from
``app.domain.limits``) and the rules across fields once, with the domain's functions; the
Python edge runs the domain's checks field by field. Hypothesis looks for a value on
which they disagree, near every limit."""

from dataclasses import fields
from typing import Any, Final

from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError as BodyRefused

from app.api.schemas import AccountCreate, TransferCreate
from app.application.commands import GrantTerms, OpenAccount, RecordTransfer
from app.domain import limits
from app.domain.errors import LedgerError
from app.domain.lots import PRIORITY_MAX, PRIORITY_MIN
from app.domain.times import parse_time

Json = dict[str, Any]
EXAMPLES: Final = 400

# The verdict of one edge: the command it builds, or a refusal (its code, or "shape" for
# a body the model refuses while parsing: 422 validation_error over HTTP).
Verdict = tuple[str, object]
SHAPE: Final = "shape"

ID_MAX: Final = limits.ID_LENGTH_MAX
IDS: Final = st.one_of(
    st.sampled_from(["a", "b"]),  # often the same account twice
    st.from_regex(limits.ID_PATTERN, fullmatch=True),
    st.sampled_from(
        ["", "x" * ID_MAX, "x" * (ID_MAX + 1), "a\n", "has space", "é", "expiry:x", "breakage:y"]
    ),
    st.text(max_size=4),
    st.integers(-1, 1),
    st.none(),
)
UNITS: Final = st.one_of(
    st.from_regex(limits.UNIT_PATTERN, fullmatch=True),
    st.sampled_from(["", "U" * 16, "U" * 17, "usd", "USD\n"]),
    st.integers(0, 1),
)
WHOLE_NUMBERS: Final = st.one_of(
    st.sampled_from([True, False, None, 1.0, 1.5, "5", [5]]), st.integers(-3, 10)
)
AMOUNTS: Final = st.one_of(
    WHOLE_NUMBERS, st.sampled_from([limits.AMOUNT_MAX, limits.AMOUNT_MAX + 1, -(2**63)])
)
TIMEOUTS: Final = st.one_of(
    st.none(),
    WHOLE_NUMBERS,
    st.sampled_from([limits.TIMEOUT_SECONDS_MAX, limits.TIMEOUT_SECONDS_MAX + 1]),
)
OVERDRAFTS: Final = st.one_of(
    WHOLE_NUMBERS, st.sampled_from([limits.OVERDRAFT_LIMIT_MAX, limits.OVERDRAFT_LIMIT_MAX + 1])
)
BOOLEANS: Final = st.sampled_from([True, False, 0, 1, None, "true"])
KEY_MAX: Final = limits.METADATA_KEY_LENGTH_MAX
VALUE_MAX: Final = limits.METADATA_VALUE_LENGTH_MAX
METADATA: Final = st.one_of(
    st.dictionaries(
        st.one_of(st.sampled_from(["", "k" * KEY_MAX, "k" * (KEY_MAX + 1)]), st.text(max_size=3)),
        st.one_of(
            st.sampled_from(["", "v" * VALUE_MAX, "v" * (VALUE_MAX + 1)]),
            st.text(max_size=3),
            st.integers(0, 1),
            st.none(),
        ),
        max_size=3,
    ),
    st.sampled_from([limits.METADATA_ENTRIES_MAX, limits.METADATA_ENTRIES_MAX + 1]).map(
        lambda n: {f"k{i:02}": "v" for i in reversed(range(n))}
    ),
    st.sampled_from([[], "k=v", 5]),
)
TIMES: Final = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "2026-01-01",
            "2026-01-01T00:00:00Z",
            "2026-01-02T01:00:00+01:00",
            "2026-02-30",
            "9999-12-31T23:59:59-23:59",
            "not a time",
            5,
        ]
    ),
)
GRANTS: Final = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "expires_at": TIMES,
            "effective_at": TIMES,
            "priority": st.one_of(
                st.sampled_from([PRIORITY_MIN - 1, PRIORITY_MAX + 1, True, 5.0]),
                st.integers(PRIORITY_MIN, PRIORITY_MAX),
            ),
            "category": st.sampled_from(["paid", "promotional", "gift", None]),
        },
    ),
    st.sampled_from(["paid", 5]),
)
ANY_TRANSFER_BODIES: Final = st.fixed_dictionaries(
    {"id": IDS, "debit_account_id": IDS, "credit_account_id": IDS, "amount": AMOUNTS},
    optional={
        "pending": BOOLEANS,
        "timeout_seconds": TIMEOUTS,
        "metadata": METADATA,
        "grant": GRANTS,
    },
)
# Bodies whose every field is valid (the same account on both sides half the time): among
# the bodies above an accepted one is rare (a few in 400), so rare that whether any was
# drawn at all depended on what the process had imported before.
VALID_FIELD_BODIES: Final = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["t", "u"]),
        "debit_account_id": st.sampled_from(["a", "b"]),
        "credit_account_id": st.sampled_from(["a", "b"]),
        "amount": st.integers(1, limits.AMOUNT_MAX),
    }
)
TRANSFER_BODIES: Final = st.one_of(ANY_TRANSFER_BODIES, VALID_FIELD_BODIES)
ACCOUNT_BODIES: Final = st.fixed_dictionaries(
    {"id": IDS, "unit": UNITS},
    optional={
        "allow_negative": BOOLEANS,
        "overdraft_limit": OVERDRAFTS,
        "metadata": METADATA,
        "account_type": st.sampled_from(["asset", "equity", "Asset", "", None, 1]),
    },
)


def built(command: RecordTransfer | OpenAccount) -> Verdict:
    """What the ledger receives, the metadata's order included (events record it)."""
    return "ok", (command, list(command.metadata.items()))


def transfer_over_http(body: Json) -> Verdict:
    try:
        parsed = TransferCreate.model_validate(body)
    except BodyRefused:
        return SHAPE, None
    try:
        command = parsed.command()
    except LedgerError as error:
        return error.code, None
    assert command.is_checked(), "the ledger trusts what the HTTP edge built"
    return built(command)


def grant_in_python(grant: object) -> object:
    """A Python caller's grant: times parsed by the same function the HTTP edge uses."""
    if not isinstance(grant, dict):
        return grant
    times = {
        name: parse_time(value, name) if isinstance(value, str) else value
        for name, value in grant.items()
        if name in ("expires_at", "effective_at")
    }
    return GrantTerms(**{**grant, **times})


def transfer_in_python(body: Json) -> Verdict:
    try:
        values = {**body, "grant": grant_in_python(body.get("grant"))}
        command = RecordTransfer(**values).checked()
    except LedgerError as error:
        return error.code, None
    return built(command)


def account_over_http(body: Json) -> Verdict:
    try:
        return built(AccountCreate.model_validate(body).command())
    except BodyRefused:
        return SHAPE, None


def account_in_python(body: Json) -> Verdict:
    try:
        return built(OpenAccount(**body).checked())
    except LedgerError as error:
        return error.code, None


def assert_agree(http: Verdict, python: Verdict) -> None:
    if http[0] == SHAPE:
        assert python[0] != "ok", f"the HTTP model refuses what checked() accepts: {python}"
    else:
        assert http == python


GRANT: Final[Json] = {"expires_at": "2026-01-01", "effective_at": "2026-01-01T00:00:00Z"}
ACROSS_FIELDS: Final[list[Json]] = [  # one body per rule across fields, and one with two
    {"id": "t", "debit_account_id": "a", "credit_account_id": "a", "amount": 1},
    {"id": "t", "debit_account_id": "a", "credit_account_id": "b", "amount": 1, "grant": GRANT},
    {"id": "t", "debit_account_id": "a", "credit_account_id": "b", "amount": 1, "grant": {}}
    | {"pending": True},
    {"id": "t", "debit_account_id": "a", "credit_account_id": "b", "amount": 1}
    | {"timeout_seconds": 5},
    {"id": "expiry:t", "debit_account_id": "a", "credit_account_id": "b", "amount": 1},
    {"id": "t", "debit_account_id": "a", "credit_account_id": "a", "amount": 1}
    | {"pending": True, "grant": {"priority": 3}, "timeout_seconds": 5},
]


@settings(max_examples=EXAMPLES, deadline=None)
@given(TRANSFER_BODIES)
@example(ACROSS_FIELDS[0])
@example(ACROSS_FIELDS[1])
@example(ACROSS_FIELDS[2])
@example(ACROSS_FIELDS[3])
@example(ACROSS_FIELDS[4])
@example(ACROSS_FIELDS[5])
def test_a_transfer_body_is_accepted_over_http_exactly_when_checked_accepts_it(
    body: Json,
) -> None:
    assert_agree(transfer_over_http(body), transfer_in_python(body))


@settings(max_examples=EXAMPLES, deadline=None)
@given(ACCOUNT_BODIES)
def test_an_account_body_is_accepted_over_http_exactly_when_checked_accepts_it(
    body: Json,
) -> None:
    assert_agree(account_over_http(body), account_in_python(body))


def test_each_rule_across_fields_refuses_over_http_with_its_domain_code() -> None:
    verdicts = [transfer_over_http(body)[0] for body in ACROSS_FIELDS]
    assert verdicts == [
        "same_account",
        "invalid_time_range",
        "validation_error",  # a grant is never pending
        "validation_error",  # a timeout only on a pending transfer
        "validation_error",  # the ledger's own ids
        "validation_error",  # the grant's rule comes first, as in checked()
    ]


def test_the_generated_bodies_reach_every_verdict() -> None:
    """Guard against a vacuous agreement: bodies accepted by both, refused while parsing,
    and refused by a rule across fields all occur among the generated ones (the other
    rules' refusals are the explicit examples). Derandomized: the same bodies every run."""
    seen: set[str] = set()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True)
    @given(TRANSFER_BODIES)
    def collect(body: Json) -> None:
        seen.add(transfer_over_http(body)[0])

    collect()
    assert {"ok", SHAPE, "same_account"} <= seen, seen


def test_a_python_caller_may_leave_metadata_out_with_none_where_http_needs_an_object() -> None:
    """The one deliberate difference: ``metadata=None`` means none to a Python caller;
    a JSON ``null`` is refused (the schema says an object)."""
    values: Json = {"id": "t", "debit_account_id": "a", "credit_account_id": "b", "amount": 1}
    assert RecordTransfer(**values, metadata=None).checked().metadata == {}  # type: ignore[arg-type]
    assert transfer_over_http({**values, "metadata": None}) == (SHAPE, None)


def test_every_field_of_a_command_has_its_rule_in_the_body_model() -> None:
    """A field added to a command without its body field (and so its HTTP rule) fails here."""
    assert {f.name for f in fields(RecordTransfer)} == set(TransferCreate.model_fields)
    assert {f.name for f in fields(OpenAccount)} == set(AccountCreate.model_fields)
