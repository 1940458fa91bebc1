"""The explorer's view functions: plain values in, plain values out (no I/O), so each
rule a page follows (which instant, which window, where a point sits) is tested alone."""

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from app.domain.transfer import Transfer, TransferStatus, fate_after

Interval = Literal["hour", "day", "month"]
INTERVALS: Final[tuple[Interval, ...]] = ("hour", "day", "month")
CHART_BUCKETS_MAX: Final = 60
CHART_WIDTH: Final = 720
CHART_HEIGHT: Final = 180
CHART_MARGIN_LEFT: Final = 8
CHART_MARGIN_RIGHT: Final = 8
CHART_MARGIN_TOP: Final = 12
CHART_MARGIN_BOTTOM: Final = 12
EXPLORER_ROOT: Final = "/explorer/"
INSTANT_TEXT_LENGTH_MAX: Final = 40


# Instants ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AsOfChoice:
    """The instant a page shows: None means now. ``problem`` says why a given text was
    not used (shown to the user; the page then shows now)."""

    moment: datetime | None
    problem: str | None = None


def parse_as_of(text: str | None, now: datetime) -> AsOfChoice:
    """An instant from the time picker (``datetime-local``: no zone, read as UTC) or any
    RFC 3339 text. Empty means now; the future is refused (nothing is known of it)."""
    if text is None or not text.strip():
        return AsOfChoice(None)
    text = text.strip()
    if len(text) > INSTANT_TEXT_LENGTH_MAX:
        return AsOfChoice(None, "that time is too long to be a date and time; showing now")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return AsOfChoice(None, "that is not a date and time (YYYY-MM-DDTHH:MM); showing now")
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if moment > now:
        return AsOfChoice(None, "that time is in the future; showing now")
    return AsOfChoice(moment)


def picker_value(moment: datetime) -> str:
    """The value of a ``datetime-local`` input (UTC, to the second)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def instant_text(moment: datetime | None) -> str:
    if moment is None:
        return ""
    text = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{moment.microsecond // 1000:03d} UTC" if moment.microsecond else f"{text} UTC"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# History window and chart --------------------------------------------------------------


def floor_to(moment: datetime, interval: Interval) -> datetime:
    moment = moment.astimezone(UTC)
    if interval == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    if interval == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def step(moment: datetime, interval: Interval, count: int = 1) -> datetime:
    """``moment`` moved by ``count`` intervals (months by the calendar)."""
    if interval == "hour":
        return moment + timedelta(hours=count)
    if interval == "day":
        return moment + timedelta(days=count)
    months = moment.year * 12 + moment.month - 1 + count
    year, month = divmod(months, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def buckets_between(since: datetime, until: datetime, interval: Interval) -> int:
    """How many intervals from ``since`` it takes for one to end at or after ``until``
    (at least one). Counted, not walked: a decade of hours is one division."""
    if interval == "month":
        count = (until.year - since.year) * 12 + until.month - since.month
    else:
        unit = timedelta(hours=1) if interval == "hour" else timedelta(days=1)
        count = (until - since) // unit
    count = max(count, 1)
    while step(since, interval, count) < until:
        count += 1
    while count > 1 and step(since, interval, count - 1) >= until:
        count -= 1
    return count


@dataclass(frozen=True)
class HistoryWindow:
    """What the chart shows: the balance at the end of each ``interval`` from ``since``
    that has ended by ``until`` (the instant the page shows), then at ``until`` itself."""

    interval: Interval
    since: datetime
    until: datetime

    @property
    def history_until(self) -> datetime:
        """The end of the last whole interval: the history query's ``until``."""
        return max(floor_to(self.until, self.interval), self.since)

    def bucket_ends(self) -> list[datetime]:
        if self.history_until <= self.since:
            return []
        count = buckets_between(self.since, self.history_until, self.interval)
        return [step(self.since, self.interval, index + 1) for index in range(count)]


def history_window(opened_at: datetime, until: datetime) -> HistoryWindow:
    """The finest interval that shows the account's whole life in at most
    ``CHART_BUCKETS_MAX`` buckets; past that, the last ``CHART_BUCKETS_MAX`` months."""
    start = min(opened_at, until)
    for interval in INTERVALS:
        since = floor_to(start, interval)
        if buckets_between(since, until, interval) <= CHART_BUCKETS_MAX:
            return HistoryWindow(interval, since, until)
    since = step(floor_to(until, "month"), "month", 1 - CHART_BUCKETS_MAX)
    return HistoryWindow("month", since, until)


@dataclass(frozen=True)
class ChartPoint:
    x: float
    y: float
    end: datetime  # the balance is the one just before this instant
    balance: int
    bucket: bool  # the end of a whole interval (else: the instant the page shows)


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    points: list[ChartPoint]
    line: str
    zero_y: float
    top_label: int
    bottom_label: int


def balance_chart(buckets: Sequence[tuple[datetime, int]], instant: tuple[datetime, int]) -> Chart:
    """SVG geometry: one point per whole interval (its end, its balance), then one for
    the instant shown; evenly spaced; the vertical scale always includes zero."""
    points = [(end, balance, True) for end, balance in buckets]
    if not buckets or buckets[-1][0] != instant[0]:
        points.append((instant[0], instant[1], False))
    balances = [balance for _, balance, _ in points]
    top, bottom = max([0, *balances]), min([0, *balances])
    if top == bottom:
        top = bottom + 1
    inner_width = CHART_WIDTH - CHART_MARGIN_LEFT - CHART_MARGIN_RIGHT
    inner_height = CHART_HEIGHT - CHART_MARGIN_TOP - CHART_MARGIN_BOTTOM

    def y_of(value: int) -> float:
        return round(CHART_MARGIN_TOP + (top - value) / (top - bottom) * inner_height, 2)

    gap = inner_width / max(len(points) - 1, 1)
    placed = [
        ChartPoint(
            x=round(CHART_MARGIN_LEFT + (index * gap if len(points) > 1 else inner_width / 2), 2),
            y=y_of(balance),
            end=end,
            balance=balance,
            bucket=bucket,
        )
        for index, (end, balance, bucket) in enumerate(points)
    ]
    return Chart(
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
        points=placed,
        line=" ".join(f"{point.x},{point.y}" for point in placed),
        zero_y=y_of(0),
        top_label=top,
        bottom_label=bottom,
    )


# Transfers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusStep:
    """One step of a transfer's life, from its own stream."""

    status: str
    at: datetime
    amount: int | None = None
    related_transfer_id: str | None = None
    note: str = ""
    # Which lots the step took from (grant id, amount; None is the general lot).
    allocations: tuple[tuple[str | None, int], ...] = ()


def allocation_pairs(records: Iterable[Any] | None) -> tuple[tuple[str | None, int], ...]:
    """Allocations as (grant id, amount) pairs, from event records or Allocation values."""
    pairs: list[tuple[str | None, int]] = []
    for record in records or ():
        if isinstance(record, dict):
            pairs.append((record.get("grant_id"), int(record["amount"])))
        else:
            pairs.append((record.grant_id, int(record.amount)))
    return tuple(pairs)


def status_history(events: Iterable[Any]) -> list[StatusStep]:
    """The transfer's steps; each fate as the domain's rule (``fate_after``) says."""
    steps: list[StatusStep] = []
    fate: TransferStatus = "posted"
    for event in events:
        fate = fate_after(fate, event)
        if isinstance(event, Transfer.TransferRecorded):
            note = "recorded as a hold" if event.pending else "recorded"
            if event.reversal_of is not None:
                note = "recorded as the reversal of"
            taken = allocation_pairs(getattr(event, "allocations", None))
            steps.append(
                StatusStep(fate, event.timestamp, event.amount, event.reversal_of, note, taken)
            )
        elif isinstance(event, Transfer.PendingPosted):
            taken = allocation_pairs(getattr(event, "allocations", None))
            steps.append(
                StatusStep(fate, event.timestamp, event.amount, None, "hold posted", taken)
            )
        elif isinstance(event, Transfer.PendingVoided):
            steps.append(StatusStep(fate, event.timestamp, None, None, "hold voided"))
        elif isinstance(event, Transfer.PendingExpired):
            steps.append(StatusStep(fate, event.timestamp, None, None, "hold expired"))
        elif isinstance(event, Transfer.Reversed):
            steps.append(
                StatusStep("reversed", event.timestamp, None, event.reversal_id, "reversed by")
            )
    return steps


# Holds -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenHold:
    transfer_id: str
    side: str  # "debit" or "credit": which side of the hold this account is on
    amount: int
    counterparty_id: str | None
    placed_at: datetime


@dataclass(frozen=True)
class HoldsAsOf:
    holds: list[OpenHold]
    # Whether the holds listed add up to the pending figures (else older ones were not
    # reached by the lines read).
    complete: bool


def open_holds(
    lines: Sequence[Any], *, reached_start: bool, debits_pending: int, credits_pending: int
) -> HoldsAsOf:
    """The holds still open after the newest of ``lines`` (statement lines, newest first,
    each carrying the counters after it): transfers whose lines left money pending.

    A line's pending change is its counters minus the next older line's. The oldest line
    given is used only as that reference, unless ``reached_start`` says it is the
    account's first line (whose predecessor is zero)."""
    counted = len(lines) if reached_start else max(len(lines) - 1, 0)
    changes: dict[str, list[int]] = {}
    first_seen: dict[str, Any] = {}
    for index in range(counted):
        line = lines[index]
        older = lines[index + 1] if index + 1 < len(lines) else None
        change = changes.setdefault(line.transfer_id, [0, 0])
        change[0] += line.debits_pending - (older.debits_pending if older else 0)
        change[1] += line.credits_pending - (older.credits_pending if older else 0)
        first_seen[line.transfer_id] = line  # newest first: the oldest line stays
    holds = [
        OpenHold(
            transfer_id,
            side,
            amount,
            first_seen[transfer_id].counterparty_id,
            first_seen[transfer_id].recorded_at,
        )
        for transfer_id, (debit, credit) in changes.items()
        for side, amount in (("debit", debit), ("credit", credit))
        if amount > 0
    ]
    debit_total = sum(hold.amount for hold in holds if hold.side == "debit")
    credit_total = sum(hold.amount for hold in holds if hold.side == "credit")
    return HoldsAsOf(
        holds=holds,
        complete=(debit_total, credit_total) == (debits_pending, credits_pending),
    )


# Lots --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LotsAsOf:
    lots: list[Any]  # grant lots still holding credit (live, or expired awaiting breakage)
    # What the rest of the balance is: credit that came without a grant (None when not
    # every lot was read, so the rest is not known).
    general: int | None


def lots_as_of(lots: Sequence[Any], balance: int, *, complete: bool) -> LotsAsOf:
    """The lots sum to the balance (invariant 7): what the grant lots do not hold is the
    account's general lot (negative when an overdraft was spent)."""
    general = balance - sum(lot.remaining for lot in lots) if complete else None
    return LotsAsOf(list(lots), general)


@dataclass(frozen=True)
class LotMove:
    """One lot a statement line moved, signed like the line (debits negative)."""

    grant_id: str | None  # None: the general lot
    amount: int
    opened: bool  # the line is the grant that opened this lot


def line_lots(line: Any) -> list[LotMove]:
    return [
        LotMove(grant_id, amount, opened=grant_id == line.transfer_id and amount > 0)
        for grant_id, amount in allocation_pairs(line.allocations)
    ]


# Statement wording ---------------------------------------------------------------------

ENTRY_WORDS: Final = {
    "Debited": "debit",
    "Credited": "credit",
    "DebitReserved": "hold placed (debit)",
    "CreditReserved": "hold placed (credit)",
    "DebitHoldSettled": "hold settled (debit)",
    "CreditHoldSettled": "hold settled (credit)",
}


def entry_words(kind: str) -> str:
    return ENTRY_WORDS.get(kind, kind)


def amount_text(amount: int | None) -> str:
    return "" if amount is None else f"{amount:,}"


def signed_amount_text(amount: int) -> str:
    return f"+{amount:,}" if amount > 0 else f"{amount:,}"


# Search and navigation -----------------------------------------------------------------


def metadata_filter(key: str | None, value: str | None) -> dict[str, str]:
    """One ``metadata.KEY=VALUE`` condition from the search form (empty key: none)."""
    if not key:
        return {}
    return {key: value or ""}


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only a path inside the explorer (never another
    site: ``//host`` and backslashes are refused)."""
    if (
        not target
        or not target.startswith(EXPLORER_ROOT)
        or target.startswith("//")
        or "\\" in target
        or any(ord(character) < 0x20 for character in target)
    ):
        return EXPLORER_ROOT
    return target
