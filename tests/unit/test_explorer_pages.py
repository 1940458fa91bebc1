"""The explorer's view functions, alone: which instant a page shows, which buckets its
chart has and where each point sits, how a transfer's life reads, where sign-in leads."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from app.domain.lots import Allocation
from app.domain.transfer import Transfer
from app.explorer import pages

NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


def test_an_empty_time_picker_means_now() -> None:
    assert pages.parse_as_of(None, NOW) == pages.AsOfChoice(None)
    assert pages.parse_as_of("  ", NOW) == pages.AsOfChoice(None)


def test_a_picker_time_without_a_zone_is_read_as_utc() -> None:
    choice = pages.parse_as_of("2026-03-01T12:30", NOW)
    assert choice == pages.AsOfChoice(datetime(2026, 3, 1, 12, 30, tzinfo=UTC))
    seconds = pages.parse_as_of("2026-03-01T12:30:15", NOW)
    assert seconds.moment == datetime(2026, 3, 1, 12, 30, 15, tzinfo=UTC)


def test_an_rfc3339_time_with_an_offset_is_converted_to_utc() -> None:
    choice = pages.parse_as_of("2026-03-01T14:30:00+02:00", NOW)
    assert choice.moment == datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    assert pages.parse_as_of("2026-03-01T12:30:00Z", NOW).moment == choice.moment


def test_a_future_or_unreadable_time_shows_now_and_says_why() -> None:
    future = pages.parse_as_of((NOW + timedelta(seconds=1)).isoformat(), NOW)
    assert future.moment is None
    assert future.problem is not None
    assert "future" in future.problem
    garbage = pages.parse_as_of("<script>alert(1)</script>", NOW)
    assert garbage.moment is None
    assert garbage.problem is not None
    assert "<script>" not in garbage.problem  # the page never echoes what it could not read
    too_long = pages.parse_as_of("2026-03-01T12:30:00" + "0" * 100, NOW)
    assert too_long.moment is None


@given(instants)
def test_the_picker_value_reads_back_as_the_same_second(moment: datetime) -> None:
    value = pages.picker_value(moment)
    assert pages.parse_as_of(value, datetime(2200, 1, 1, tzinfo=UTC)).moment == moment.replace(
        microsecond=0
    )


def test_months_step_by_the_calendar() -> None:
    january = datetime(2026, 1, 1, tzinfo=UTC)
    assert pages.step(january, "month") == datetime(2026, 2, 1, tzinfo=UTC)
    assert pages.step(january, "month", 12) == datetime(2027, 1, 1, tzinfo=UTC)
    assert pages.step(january, "month", -1) == datetime(2025, 12, 1, tzinfo=UTC)
    assert pages.step(datetime(2026, 1, 31, tzinfo=UTC), "month") == datetime(
        2026, 2, 28, tzinfo=UTC
    )


def test_a_young_account_is_charted_by_the_hour() -> None:
    window = pages.history_window(NOW - timedelta(hours=5, minutes=30), NOW)
    assert window.interval == "hour"
    assert window.since == datetime(2026, 3, 14, 9, tzinfo=UTC)
    assert window.history_until == datetime(2026, 3, 14, 15, tzinfo=UTC)
    ends = window.bucket_ends()
    assert ends[0] == datetime(2026, 3, 14, 10, tzinfo=UTC)
    assert ends[-1] == datetime(2026, 3, 14, 15, tzinfo=UTC)  # the last whole hour
    assert len(ends) == 6


def test_an_account_younger_than_an_hour_has_no_whole_interval_yet() -> None:
    window = pages.history_window(NOW - timedelta(minutes=5), NOW)
    assert window.interval == "hour"
    assert window.bucket_ends() == []


def test_an_old_account_is_charted_by_the_month_and_at_most_the_last_sixty() -> None:
    window = pages.history_window(datetime(2001, 5, 17, tzinfo=UTC), NOW)
    assert window.interval == "month"
    ends = window.bucket_ends()
    assert len(ends) == pages.CHART_BUCKETS_MAX - 1  # and the running month is the instant
    assert ends[-1] == datetime(2026, 3, 1, tzinfo=UTC)
    assert window.since == datetime(2021, 4, 1, tzinfo=UTC)


@given(opened=instants, age=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=9000)))
def test_every_window_ends_its_intervals_by_its_instant_within_the_bucket_limit(
    opened: datetime, age: timedelta
) -> None:
    until = opened + age
    window = pages.history_window(opened, until)
    ends = window.bucket_ends()
    assert len(ends) < pages.CHART_BUCKETS_MAX  # the instant's point makes the limit
    assert ends == sorted(set(ends))
    assert all(window.since < end <= until for end in ends)
    if ends:
        assert ends[-1] == window.history_until == pages.floor_to(until, window.interval)
    assert window.since <= opened or len(ends) == pages.CHART_BUCKETS_MAX - 1


@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=0, max_size=59))
def test_the_chart_has_one_point_per_bucket_then_the_instant_in_balance_order(
    balances: list[int],
) -> None:
    ends = [NOW - timedelta(hours=len(balances) - index) for index in range(len(balances))]
    chart = pages.balance_chart(list(zip(ends, balances, strict=True)), (NOW, 42))
    assert [point.balance for point in chart.points] == [*balances, 42]
    assert [point.bucket for point in chart.points] == [True] * len(balances) + [False]
    assert all(
        0 <= point.x <= chart.width and 0 <= point.y <= chart.height for point in chart.points
    )
    assert 0 <= chart.zero_y <= chart.height
    xs = [point.x for point in chart.points]
    assert xs == sorted(xs)
    for first, second in zip(chart.points, chart.points[1:], strict=False):
        # Higher balances are drawn higher (smaller y) — never the other way round.
        if first.balance > second.balance:
            assert first.y <= second.y
        if first.balance == second.balance:
            assert first.y == second.y
    assert len(chart.line.split()) == len(balances) + 1


def test_an_instant_on_a_bucket_end_is_not_drawn_twice() -> None:
    chart = pages.balance_chart([(NOW - timedelta(hours=1), 5), (NOW, 7)], (NOW, 7))
    assert [(point.balance, point.bucket) for point in chart.points] == [(5, True), (7, True)]


def a_transfer(*, pending: bool, reversal_of: str | None = None) -> Transfer:
    return Transfer.record(
        transfer_id="t:1",
        debit_account_id="a",
        credit_account_id="b",
        amount=70,
        unit="CREDITS",
        pending=pending,
        timeout_seconds=60 if pending else None,
        metadata={},
        reversal_of=reversal_of,
    )


def test_a_hold_reads_pending_then_posted_with_the_amount_posted() -> None:
    transfer = a_transfer(pending=True)
    transfer.post(50, now=transfer.recorded_at)
    steps = pages.status_history(transfer.collect_events())
    assert [(step.status, step.amount) for step in steps] == [("pending", 70), ("posted", 50)]
    assert steps[0].at <= steps[1].at


def test_a_voided_and_an_expired_hold_end_so() -> None:
    voided = a_transfer(pending=True)
    voided.void(now=voided.recorded_at)
    assert [s.status for s in pages.status_history(voided.collect_events())] == [
        "pending",
        "voided",
    ]
    expired = a_transfer(pending=True)
    assert expired.expires_at is not None
    expired.expire(now=expired.expires_at)
    assert [s.status for s in pages.status_history(expired.collect_events())] == [
        "pending",
        "expired",
    ]


def test_reversals_are_linked_both_ways() -> None:
    original = a_transfer(pending=False)
    original.mark_reversed("refund:1")
    steps = pages.status_history(original.collect_events())
    assert [(s.status, s.related_transfer_id) for s in steps] == [
        ("posted", None),
        ("reversed", "refund:1"),
    ]
    refund = pages.status_history(a_transfer(pending=False, reversal_of="t:0").collect_events())
    assert [(s.status, s.related_transfer_id) for s in refund] == [("posted", "t:0")]


def test_sign_in_only_leads_back_inside_the_explorer() -> None:
    assert pages.safe_next("/explorer/accounts/user:1?as_of=2026-01-01") == (
        "/explorer/accounts/user:1?as_of=2026-01-01"
    )
    for elsewhere in [
        None,
        "",
        "https://evil.example/explorer/",
        "//evil.example/explorer/",
        "/explorer/\\evil.example",
        "/v1/accounts",
        "/explorer/\r\nSet-Cookie: x=1",
    ]:
        assert pages.safe_next(elsewhere) == pages.EXPLORER_ROOT, elsewhere


def test_the_metadata_search_is_one_condition_or_none() -> None:
    assert pages.metadata_filter(None, "x") == {}
    assert pages.metadata_filter("", "x") == {}
    assert pages.metadata_filter("plan", "pro") == {"plan": "pro"}
    assert pages.metadata_filter("plan", None) == {"plan": ""}


def test_amounts_read_with_thousands_separators_and_signs() -> None:
    assert pages.amount_text(1234567) == "1,234,567"
    assert pages.amount_text(None) == ""
    assert pages.signed_amount_text(5) == "+5"
    assert pages.signed_amount_text(-5000) == "-5,000"
    assert pages.signed_amount_text(0) == "0"
    assert pages.entry_words("DebitReserved") == "hold placed (debit)"
    assert pages.entry_words("SomethingNew") == "SomethingNew"


@dataclass(frozen=True)
class Line:
    """A statement line as the holds rule reads it: the counters after it."""

    transfer_id: str
    debits_pending: int
    credits_pending: int
    counterparty_id: str | None = "other"
    recorded_at: datetime = NOW


# A hold's life on one account: placed on one side, then maybe settled.
hold_lives = st.lists(
    st.tuples(st.sampled_from(["debit", "credit"]), st.integers(1, 1000), st.booleans()),
    max_size=12,
)


def statement_of(lives: list[tuple[str, int, bool]], draw_order: list[int]) -> list[Line]:
    """Lines, oldest first: every hold placed, then the settled ones released in an order."""
    debits = credits = 0
    lines = []
    for index, (side, amount, _) in enumerate(lives):
        debits += amount if side == "debit" else 0
        credits += amount if side == "credit" else 0
        lines.append(Line(f"h:{index}", debits, credits))
    for index in draw_order:
        side, amount, settled = lives[index]
        if settled:
            debits -= amount if side == "debit" else 0
            credits -= amount if side == "credit" else 0
            lines.append(Line(f"h:{index}", debits, credits))
    return lines


@given(lives=hold_lives, data=st.data())
def test_open_holds_are_the_placed_ones_not_yet_settled(
    lives: list[tuple[str, int, bool]], data: st.DataObject
) -> None:
    order = data.draw(st.permutations(list(range(len(lives)))))
    oldest_first = statement_of(lives, order)
    newest_first = list(reversed(oldest_first))
    last = oldest_first[-1] if oldest_first else Line("-", 0, 0)
    found = pages.open_holds(
        newest_first,
        reached_start=True,
        debits_pending=last.debits_pending,
        credits_pending=last.credits_pending,
    )
    expected = {
        (f"h:{index}", side, amount)
        for index, (side, amount, settled) in enumerate(lives)
        if not settled
    }
    assert {(hold.transfer_id, hold.side, hold.amount) for hold in found.holds} == expected
    assert found.complete


@given(lives=hold_lives.filter(lambda lives: any(not settled for _, _, settled in lives)))
def test_holds_beyond_the_lines_read_are_reported_as_missing(
    lives: list[tuple[str, int, bool]],
) -> None:
    oldest_first = statement_of(lives, list(range(len(lives))))
    newest_first = list(reversed(oldest_first))
    last = oldest_first[-1]
    # Only the newest line is read (plus nothing older): no hold can be attributed.
    found = pages.open_holds(
        newest_first[:1],
        reached_start=False,
        debits_pending=last.debits_pending,
        credits_pending=last.credits_pending,
    )
    assert found.holds == []
    assert not found.complete


@dataclass(frozen=True)
class LotLeft:
    remaining: int


@given(st.lists(st.integers(0, 10**6), max_size=20), st.integers(-(10**6), 10**7))
def test_the_general_lot_is_what_the_grant_lots_do_not_hold(
    remainders: list[int], balance: int
) -> None:
    lots = [LotLeft(remaining) for remaining in remainders]
    known = pages.lots_as_of(lots, balance, complete=True)
    assert known.general is not None
    assert known.general + sum(remainders) == balance  # the lots sum to the balance
    assert pages.lots_as_of(lots, balance, complete=False).general is None


@dataclass(frozen=True)
class MovedLine:
    transfer_id: str
    allocations: tuple[Allocation, ...]


def test_a_line_shows_the_lots_it_moved_and_whether_it_opened_one() -> None:
    spend = MovedLine("t:spend", (Allocation("grant:1", -7), Allocation(None, -3)))
    assert pages.line_lots(spend) == [
        pages.LotMove("grant:1", -7, opened=False),
        pages.LotMove(None, -3, opened=False),
    ]
    grant = MovedLine("grant:2", (Allocation("grant:2", 20),))
    assert pages.line_lots(grant) == [pages.LotMove("grant:2", 20, opened=True)]
    refund = MovedLine("t:refund", (Allocation("grant:1", 7),))
    assert pages.line_lots(refund) == [pages.LotMove("grant:1", 7, opened=False)]
    assert pages.line_lots(MovedLine("t:plain", ())) == []
