"""Reading the whole log in order, page by page, in constant memory.

Every audit tool starts here and never at the projections: the log is the truth.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from app.application.ledger import Ledger
from app.domain.account import Account
from app.domain.commits import COMMIT_ID, COMMIT_LAST, ends_commit
from app.domain.postings import Counters, post
from app.domain.transfer import Transfer
from app.persistence.positions import log_states
from app.persistence.transcoder import EVENT_TIME_KEY, OrjsonTranscoder

LOG_PAGE_SIZE: Final = 2000


class LogReader(Protocol):
    """``read_log`` or ``read_stamps``: (position, event or stamp), in log order."""

    def __call__(
        self, ledger: Ledger, *, on_page: Callable[[int, int], None] | None = None
    ) -> Iterator[tuple[int, Any]]: ...


@dataclass(frozen=True)
class Instant:
    """An audit's cut-off: a position, a time, or the head (both None)."""

    position: int | None = None
    moment: datetime | None = None

    def describe(self) -> str:
        if self.position is not None:
            return f"position {self.position}"
        if self.moment is not None:
            return f"as of {self.moment.isoformat()}"
        return "the head of the log"


def read_log(
    ledger: Ledger,
    *,
    after: int = 0,
    stop_position: int | None = None,
    on_page: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[int, Any]]:
    """(position, event) for every event after ``after`` up to ``stop_position``
    (inclusive)."""
    head = ledger.recorder.max_notification_id() or 0
    stop = head if stop_position is None else min(stop_position, head)
    position = after
    while position < stop:
        # No ``stop`` asked of the store: with one, SQLite's recorder takes the library's
        # slower query (a row object and a parsed UUID per row). A page no longer than
        # the positions left holds nothing past ``stop`` unless positions skip some
        # numbers, and those are dropped here.
        notifications = ledger.recorder.select_notifications(
            start=position, limit=min(LOG_PAGE_SIZE, stop - position), inclusive_of_start=False
        )
        if notifications and notifications[-1].id > stop:
            notifications = [
                notification for notification in notifications if notification.id <= stop
            ]
        if not notifications:
            return
        for notification in notifications:
            yield notification.id, ledger.mapper.to_domain_event(notification)
        position = notifications[-1].id
        if on_page is not None:
            on_page(position, stop)


class Stamp:
    """What the cut by time needs of a run of events of one commit (``InstantWindow``
    takes it as one event): the latest time stamp among them and the commit's marks
    (``commit_last``: the run ends the commit), read from the stored states without
    building the domain events."""

    __slots__ = ("commit_id", "commit_last", "timestamp")

    def __init__(self, timestamp: datetime, commit_id: str, commit_last: bool) -> None:
        self.timestamp = timestamp
        self.commit_id = commit_id
        self.commit_last = commit_last


def read_stamps(
    ledger: Ledger, *, on_page: Callable[[int, int], None] | None = None
) -> Iterator[tuple[int, Any]]:
    """The log in order, for the cut by time alone: (position, stamp) for each run of
    events of one commit within a page (the run's last position, its latest time: the
    window by time takes a run as it takes its events one by one, since none but a
    commit's last ends it and any of them recorded after the instant closes it at that
    commit), and (position, domain event) for each event without commit marks (the
    tracker's legs rule needs the event: logs written before the marks). Two columns
    read, each state parsed and three fields picked, nothing built
    (``scripts/bench_explain.py``)."""
    recorder = ledger.recorder
    head = recorder.max_notification_id() or 0
    position = 0
    while position < head:
        page = log_states(recorder, position, LOG_PAGE_SIZE)
        if page and page[-1][0] > head:  # written since the head was read
            page = [(at, state) for at, state in page if at <= head]
        if not page:
            return
        yield from _stamps_of(ledger, position, page)
        position = page[-1][0]
        if on_page is not None:
            on_page(position, head)


def _stamps_of(
    ledger: Ledger, after: int, page: list[tuple[int, bytes]]
) -> Iterator[tuple[int, Any]]:
    """``read_stamps`` of one page of stored states (the events after ``after``)."""
    mapper = ledger.mapper
    transcoder = mapper.transcoder
    decode: Callable[[bytes], Any] = transcoder.decode  # another transcoder: values whole
    untag: Callable[[Any], Any] = _as_read
    if isinstance(transcoder, OrjsonTranscoder):
        decode, untag = transcoder.decode_tagged, transcoder.untag
    transform = mapper.cipher is not None or mapper.compressor is not None
    run: Stamp | None = None
    run_end = after
    unmarked: dict[int, Any] | None = None
    # The last time stamp read, as stored and as a datetime (a command's events share it).
    tagged_time: Any = None
    moment = datetime.min
    for at, stored in page:
        fields = decode(_plain(mapper, stored) if transform else stored)
        commit_id = fields.get(COMMIT_ID)
        if type(commit_id) is not str:
            if run is not None:
                yield run_end, run
                run = None
            if unmarked is None:  # the page again, as domain events
                unmarked = dict(read_log(ledger, after=after, stop_position=page[-1][0]))
            yield at, unmarked[at]
            continue
        if fields[EVENT_TIME_KEY] != tagged_time:
            tagged_time = fields[EVENT_TIME_KEY]
            moment = untag(tagged_time)
        if run is not None and run.commit_id == commit_id:
            run.timestamp = max(run.timestamp, moment)
            run.commit_last = fields.get(COMMIT_LAST) is True
        else:
            if run is not None:
                yield run_end, run
            run = Stamp(moment, commit_id, fields.get(COMMIT_LAST) is True)
        run_end = at
    if run is not None:
        yield run_end, run


def _as_read(value: Any) -> Any:
    return value


def _plain(mapper: Any, stored: bytes) -> bytes:
    """A stored state decrypted and decompressed, as the mapper reads it."""
    if mapper.cipher is not None:
        stored = mapper.cipher.decrypt(stored)
    if mapper.compressor is not None:
        stored = mapper.compressor.decompress(stored)
    return stored


class CommitTracker:
    """Tells where a commit ends: the log says so (``app.domain.commits``); for events
    stored before it did, by the rule below.

    Within a commit the accounts' postings come first and the transfers' own events
    after them; a commit is over when every transfer it touched has all its legs (they
    net to zero) and the event that records it (or settles it)."""

    def __init__(self) -> None:
        # transfer id → the legs seen so far of a commit not yet over
        self._open: dict[str, Counters] = {}
        self._awaited: dict[str, str] = {}
        # Whether the last event observed ended its commit, as the log says (None: an
        # event stored before commits were marked; the legs rule below decides).
        self._marked_end: bool | None = None

    @property
    def quiescent(self) -> bool:
        if self._marked_end is not None:
            return self._marked_end
        return not self._open

    def observe(self, event: Any) -> None:
        self._marked_end = ends_commit(event)
        if self._marked_end is not None:
            return
        if isinstance(event, Account.BalanceChanged):
            post(self._open.setdefault(event.transfer_id, Counters()), event.delta())
            settles = isinstance(event, Account.DebitHoldSettled | Account.CreditHoldSettled)
            self._awaited[event.transfer_id] = "settled" if settles else "recorded"
        elif isinstance(event, Transfer.TransferRecorded):
            self._close(event.transfer_id, "recorded")
        elif isinstance(event, Transfer.Event):
            for transfer_id, awaited in list(self._awaited.items()):
                if awaited == "settled" and self._open[transfer_id].nets_to_zero:
                    self._close(transfer_id, "settled")

    def _close(self, transfer_id: str, what: str) -> None:
        legs = self._open.get(transfer_id)
        if self._awaited.get(transfer_id) == what and legs is not None and legs.nets_to_zero:
            del self._open[transfer_id]
            del self._awaited[transfer_id]


class InstantWindow:
    """Which events an instant admits, in one pass over the log (``admit``): by
    position, every event up to it and, when it falls inside a commit, the rest of that
    commit; by time, every commit before the first event recorded after it, each
    admitted once its last event is in. That is the views' "as of" (decision 0036): one
    state of the log whatever the clock did, never an event recorded after the instant;
    where times rise with positions, every event recorded at or before it."""

    def __init__(self, instant: Instant) -> None:
        self.instant = instant
        self.tracker = CommitTracker()
        self.closed = False
        self.last_position: int | None = None
        # By time: the events of the commit under way, admitted when it ends.
        self._commit: list[tuple[int, Any]] = []

    def admit(self, position: int, event: Any) -> list[tuple[int, Any]]:
        """The events this one lets in (in log order): itself, none, or by time, its
        whole commit once it ends the commit."""
        moment = self.instant.moment
        if self.closed:
            return []
        if self.instant.position is not None:
            if position > self.instant.position and self.tracker.quiescent:
                self.closed = True
                return []
            self.tracker.observe(event)
            admitted = [(position, event)]
        elif moment is None:
            admitted = [(position, event)]
        elif event.timestamp > moment:
            self.closed = True
            self._commit = []
            return []
        else:
            self.tracker.observe(event)
            self._commit.append((position, event))
            if not self.tracker.quiescent:
                return []
            admitted, self._commit = self._commit, []
        self.last_position = admitted[-1][0]
        return admitted


def read_at(
    ledger: Ledger, instant: Instant, on_page: Callable[[int, int], None] | None = None
) -> Iterator[tuple[int, Any]]:
    """The events an instant admits (see InstantWindow), in log order."""
    for admitted in read_admitted(ledger, instant, on_page):
        yield from admitted


def read_admitted(
    ledger: Ledger,
    instant: Instant,
    on_page: Callable[[int, int], None] | None = None,
    *,
    reader: LogReader = read_log,
) -> Iterator[list[tuple[int, Any]]]:
    """The events an instant admits, in log order, as InstantWindow lets them in: by
    time, a whole commit at a time. The log is read up to the first event outside, by
    ``reader``: ``read_log`` (domain events) or ``read_stamps`` (for the cut alone)."""
    window = InstantWindow(instant)
    for position, event in reader(ledger, on_page=on_page):
        admitted = window.admit(position, event)
        if admitted:
            yield admitted
        if window.closed:
            return
