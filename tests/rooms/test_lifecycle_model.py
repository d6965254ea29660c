"""The waiting room against a model of the token lifecycle, on random sequences of actions.

Hypothesis plays sequences of token actions (issue, call, activate, end, cancel) and clock moves
(each followed by a keeper tick) against a fresh store, and after every step compares the store
with a plain-Python model of docs/protocol.md section 5.3: the queue's order, the held tokens'
order, every token's state, the window, and the errors raised.  It also checks invariants that
need no model: every state change is a move of ``rooms.lifecycle.MOVES``, no token is both
waiting and held, numbers are unique per service day, and every token is accounted for.

The hub serves 09:00-16:00 with a capacity of 3 per window, so that overflow, carry-over and
expiry all happen within a few steps.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from core.directory import DEMO_DIRECTORY, Directory
from core.domain import HubId, Priority, RoomId, Sex, SpokeId, TokenId, TokenState, UserId
from core.store import Redis, open_store
from rooms import Patient, QueueEmpty, ServiceKeeper, TokenNotFound, TokenNotWaiting, WaitingRoom
from rooms.lifecycle import FINAL, MOVES, PENDING

S = TokenState
HUB = HubId("bhabua-sadar")
SPOKES = (SpokeId("akhlaspur"), SpokeId("sihoriya"))
NURSES = {SPOKES[0]: UserId("nurse.akhlaspur"), SPOKES[1]: UserId("nurse.sihoriya")}
DOCTOR = UserId("dr.sharma")
TZ = ZoneInfo("Asia/Kolkata")
OPENS, CLOSES = 9 * 60, 16 * 60  # minutes after local midnight
CAPACITY = 3
POLICIES = ("carry_over", "expire")
#: Where in the day (local minutes) an example starts: before, inside, near the end of, after
#: the window.
STARTS = (8 * 60 + 30, 10 * 60, 15 * 60 + 30, 20 * 60)
MAX_STEPS = 25
NEVER_ISSUED = TokenId("bhabua-sadar.20261127.999")
NO_ROOM = RoomId("bhabua-sadar.no-such-room")


# --- The actions ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Issue:
    spoke: int
    urgent: bool


@dataclasses.dataclass(frozen=True)
class CallNext:
    pass


@dataclasses.dataclass(frozen=True)
class Call:
    """Call a named token (``token`` is a pick: see ``picks``)."""

    token: int


@dataclasses.dataclass(frozen=True)
class Activate:
    """Media came up in a room (``room`` is a pick: see ``picks``)."""

    room: int


@dataclasses.dataclass(frozen=True)
class End:
    room: int
    took_place: bool


@dataclasses.dataclass(frozen=True)
class Cancel:
    """Withdraw a token, from its own spoke or from the other one."""

    token: int
    own_spoke: bool


@dataclasses.dataclass(frozen=True)
class Advance:
    minutes: int


@dataclasses.dataclass(frozen=True)
class Jump:
    """The clock moves to the window's next opening or closing, then ``late`` minutes on."""

    late: int


Action = Issue | CallNext | Call | Activate | End | Cancel | Advance | Jump

#: Which token or room an action names: 0 the latest, 1 the one before..., -1 one never made.
picks = st.integers(min_value=-1, max_value=12)
minutes = st.one_of(
    st.integers(min_value=1, max_value=120), st.sampled_from([330, 480, 960, 1440, 2880])
)
#: Each kind of action, and how often it comes among the kinds an example uses.
KINDS: dict[str, tuple[st.SearchStrategy[Action], int]] = {
    "issue": (st.builds(Issue, spoke=st.integers(0, 1), urgent=st.booleans()), 3),
    "jump": (st.builds(Jump, late=st.integers(min_value=0, max_value=45)), 2),
    "call_next": (st.just(CallNext()), 2),
    "end": (st.builds(End, room=picks, took_place=st.booleans()), 2),
    "call": (st.builds(Call, token=picks), 1),
    "activate": (st.builds(Activate, room=picks), 1),
    "cancel": (st.builds(Cancel, token=picks, own_spoke=st.booleans()), 1),
    "advance": (st.builds(Advance, minutes=minutes), 1),
}


def sequences(kinds: list[str]) -> st.SearchStrategy[list[Action]]:
    """Up to ``MAX_STEPS`` actions of these kinds, in runs: long on average, yet they shrink."""
    action = st.one_of(*(KINDS[k][0] for k in kinds for _ in range(KINDS[k][1])))
    runs = st.lists(st.lists(action, min_size=1, max_size=6), max_size=8)
    return runs.map(lambda rs: [a for r in rs for a in r][:MAX_STEPS])


#: Swarm testing: each example uses the core of the lifecycle (issue, jump, call_next, end)
#: and some of the other kinds, which makes the long runs of a few kinds that bugs often need
#: likelier than one fixed mix does.
CORE = ["issue", "jump", "call_next", "end"]
optional = st.lists(st.sampled_from([k for k in KINDS if k not in CORE]), unique=True)
scenarios = st.tuples(
    st.sampled_from(STARTS), optional.flatmap(lambda kinds: sequences([*CORE, *sorted(kinds)]))
)


# --- The model --------------------------------------------------------------------------------


@dataclasses.dataclass
class ModelToken:
    id: TokenId
    number: int
    date: str
    spoke: SpokeId
    counts_from_ms: int  # its issue time, minus the urgent advance
    order: int  # the hub-wide issue counter
    state: TokenState
    #: Was ever carried over: such a token comes before every token not carried over.
    carried: bool = False
    room: RoomId | None = None

    def key(self) -> tuple[int, int, int]:
        """Its place in the queue or among the held tokens (5.3, 6.2 "Order of the queue").

        Carried-over tokens first, in their order; then first in, first out by the time a
        token counts as issued (urgent ones earlier by the hub's advance); tokens that count
        as issued at the same moment in the order they were issued.  A requeued token keeps
        its key: it goes back to its own place.
        """
        return (0 if self.carried else 1, self.counts_from_ms, self.order)


@dataclasses.dataclass
class ModelWindow:
    start: datetime
    end: datetime
    admitted: int


class Model:
    """docs/protocol.md 5.3 and the scripts' comments, in plain Python."""

    def __init__(self, at_closing: str, urgent_advance_minutes: int) -> None:
        self.at_closing = at_closing
        self.advance_ms = urgent_advance_minutes * 60_000
        self.tokens: dict[TokenId, ModelToken] = {}
        self.queue: list[TokenId] = []
        self.held: list[TokenId] = []
        self.window: ModelWindow | None = None
        self.rooms: dict[RoomId, tuple[TokenId, str]] = {}  # room -> (token, room state)
        self.numbers: dict[str, int] = {}
        self.order = 0

    def name(self, token_id: TokenId) -> str:
        """A short name: day of the month, number, ``c`` if ever carried over (``27#3c``)."""
        t = self.tokens[token_id]
        return f"{t.date[-2:]}#{t.number}{'c' if t.carried else ''}"

    def names(self, ids: list[TokenId]) -> str:
        return "[" + " ".join(self.name(t) if t in self.tokens else t for t in ids) + "]"

    def describe(self) -> str:
        states = ", ".join(f"{self.name(t)} {tok.state}" for t, tok in self.tokens.items())
        window = "open" if self.window else "closed"
        return (
            f"window {window}, queue {self.names(self.queue)}, held {self.names(self.held)}, "
            f"tokens: {states}"
        )

    def _sort(self) -> None:
        self.queue.sort(key=lambda t: self.tokens[t].key())
        self.held.sort(key=lambda t: self.tokens[t].key())

    @staticmethod
    def window_at(now: datetime) -> tuple[datetime, datetime] | None:
        local = now.astimezone(TZ)
        midnight = datetime.combine(local.date(), datetime.min.time(), tzinfo=TZ)
        start, end = midnight + timedelta(minutes=OPENS), midnight + timedelta(minutes=CLOSES)
        return (start, end) if start <= now < end else None

    def issue(self, spoke: SpokeId, urgent: bool, now: datetime) -> ModelToken:
        date = now.astimezone(TZ).strftime("%Y%m%d")
        self.numbers[date] = self.numbers.get(date, 0) + 1
        self.order += 1
        number = self.numbers[date]
        ms = int(now.timestamp() * 1000) - (self.advance_ms if urgent else 0)
        token = ModelToken(
            TokenId(f"{HUB}.{date}.{number}"), number, date, spoke, ms, self.order, S.SCHEDULED
        )
        self.tokens[token.id] = token
        if self.window is not None and self.window.admitted < CAPACITY:
            self.window.admitted += 1
            token.state = S.WAITING
            self.queue.append(token.id)
        else:
            if self.window is not None:
                event("issued over the window's capacity")
            self.held.append(token.id)
        self._sort()
        return token

    def call(self, token_id: TokenId | None) -> TokenId | type[Exception]:
        """The token a call takes, or the error it raises."""
        if token_id is None:
            if not self.queue:
                return QueueEmpty
            token_id = self.queue[0]
        elif token_id not in self.queue:
            return TokenNotWaiting
        self.queue.remove(token_id)
        self.tokens[token_id].state = S.CALLED
        return token_id

    def opened(self, token_id: TokenId, room: RoomId) -> None:
        self.tokens[token_id].room = room
        self.rooms[room] = (token_id, "created")

    def activate(self, room: RoomId) -> str:
        if room not in self.rooms:
            return "missing"
        token_id, state = self.rooms[room]
        if state != "created":
            return state
        self.rooms[room] = (token_id, "active")
        self.tokens[token_id].state = S.IN_CONSULTATION
        return "active"

    def end(self, room: RoomId, took_place: bool) -> str:
        if room not in self.rooms:
            return "missing"
        token_id, state = self.rooms[room]
        if state == "ended":
            return "ended"
        self.rooms[room] = (token_id, "ended")
        token = self.tokens[token_id]
        if state == "active" or took_place:
            token.state = S.COMPLETED
            return "completed"
        # Back to its place: in the queue if a window is open, else carried to the next one.
        # It was counted against a window's capacity when first admitted, not again now.
        token.room = None
        if self.window is not None:
            if token.carried:
                event("a carried-over token requeued into an open window")
            token.state = S.WAITING
            self.queue.append(token_id)
        else:
            event("a token requeued while the hub is closed")
            token.state = S.CARRIED_OVER
            token.carried = True
            self.held.append(token_id)
        self._sort()
        return "requeued"

    def cancel(self, spoke: SpokeId, token_id: TokenId) -> type[Exception] | None:
        token = self.tokens.get(token_id)
        if token is None or token.spoke != spoke:
            return TokenNotFound
        if token.state not in PENDING:
            return TokenNotWaiting
        token.state = S.CANCELLED
        for ids in (self.queue, self.held):
            if token_id in ids:
                ids.remove(token_id)
        return None

    def tick(self, now: datetime) -> None:
        span = self.window_at(now)
        if span is not None and (self.window is None or self.window.start != span[0]):
            if self.window is not None:
                self.close()
            self.open(*span)
        elif span is None and self.window is not None:
            self.close()

    def close(self) -> None:
        if len(self.queue) > 1:
            event(f"closed with tokens waiting ({self.at_closing})")
        for token_id in self.queue:
            token = self.tokens[token_id]
            if self.at_closing == "carry_over":
                token.state = S.CARRIED_OVER
                token.carried = True
                self.held.append(token_id)
            else:
                token.state = S.EXPIRED
        self.queue = []
        self.window = None
        self._sort()

    def open(self, start: datetime, end: datetime) -> None:
        admitted, self.held = self.held[:CAPACITY], self.held[CAPACITY:]
        if len(admitted) > 1 and self.tokens[admitted[0]].carried:
            event("opened with carried-over tokens")
        for token_id in admitted:
            self.tokens[token_id].state = S.WAITING
        self.queue = admitted
        self.window = ModelWindow(start, end, len(admitted))
        self._sort()


# --- Running a scenario -----------------------------------------------------------------------


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def make_directory(folder: Path, at_closing: str) -> Directory:
    text = DEMO_DIRECTORY.read_text()
    for old, new in (
        ('open = "00:00"\nclose = "24:00"', 'open = "09:00"\nclose = "16:00"'),
        ('at_closing = "carry_over"', f'at_closing = "{at_closing}"'),
        ("capacity = 120", f"capacity = {CAPACITY}"),
    ):
        assert old in text, f"the demo directory no longer has {old!r}"
        text = text.replace(old, new)
    path = folder / f"directory-{at_closing}.toml"
    path.write_text(text)
    directory = Directory.load(path)
    service = directory.hub(HUB).service
    assert service.at_closing.value == at_closing
    assert service.capacity == CAPACITY
    assert str(directory.hub(HUB).tz) == str(TZ)
    return directory


@pytest.fixture(scope="module")
def directories(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Directory]:
    folder = tmp_path_factory.mktemp("lifecycle-model")
    return {policy: make_directory(folder, policy) for policy in POLICIES}


def next_boundary(now: datetime) -> datetime:
    """The first opening or closing of the window after ``now``."""
    midnight = datetime.combine(now.astimezone(TZ).date(), datetime.min.time(), tzinfo=TZ)
    moments = (OPENS, CLOSES, 24 * 60 + OPENS)
    return min(m for m in (midnight + timedelta(minutes=x) for x in moments) if m > now)


def patient(urgent: bool, n: int) -> Patient:
    return Patient(
        name=f"P{n}",
        age=40,
        sex=Sex.FEMALE,
        complaint="cough",
        priority=Priority.URGENT if urgent else Priority.NORMAL,
    )


async def outcome(call: Any) -> Any:
    """What an awaited action returned, or the type of the waiting-room error it raised."""
    try:
        return await call
    except (QueueEmpty, TokenNotFound, TokenNotWaiting) as exc:
        return type(exc)


def pick(items: list[Any], index: int, missing: Any) -> Any:
    """The ``index``-th latest of ``items`` (round the list), or ``missing`` for -1."""
    return missing if index < 0 or not items else items[-1 - index % len(items)]


class Run:
    """One scenario: the waiting room, its keeper and clock, the model, what was last seen."""

    def __init__(self, store: Redis, directory: Directory, at_closing: str, start: int) -> None:
        day = datetime(2026, 11, 27, tzinfo=TZ)
        self.clock = Clock((day + timedelta(minutes=start)).astimezone(UTC))
        self.room = WaitingRoom(store, directory, self.clock)
        self.keeper = ServiceKeeper(self.room, [HUB])
        advance = directory.hub(HUB).service.urgent_advance_minutes
        self.model = Model(at_closing, advance)
        self.issued: list[TokenId] = []
        self.room_ids: list[RoomId] = []
        self.seen: dict[TokenId, TokenState] = {}

    async def tick(self) -> None:
        await self.keeper.tick()
        self.model.tick(self.clock.now)

    async def step(self, action: Action) -> None:
        m, room = self.model, self.room
        if isinstance(action, Issue):
            spoke = SPOKES[action.spoke]
            token = await room.issue(spoke, NURSES[spoke], patient(action.urgent, len(self.issued)))
            expected = m.issue(spoke, action.urgent, self.clock.now)
            self.issued.append(token.id)
            assert (token.id, token.number, token.state) == (
                expected.id,
                expected.number,
                expected.state,
            )
        elif isinstance(action, CallNext | Call):
            named = None
            if isinstance(action, Call):
                named = pick(self.issued, action.token, NEVER_ISSUED)
            got = await outcome(room.call_next(HUB, DOCTOR, "node-a", named))
            expected_call = m.call(named)
            if isinstance(expected_call, type):
                assert got is expected_call
            else:
                assert not isinstance(got, type), f"expected {expected_call} called, got {got}"
                assert got.id == expected_call
                assert got.state is S.CALLED
                assert got.doctor == DOCTOR
                assert got.room is not None
                assert got.room not in m.rooms
                m.opened(got.id, got.room)
                self.room_ids.append(got.room)
        elif isinstance(action, Activate):
            room_id = pick(self.room_ids, action.room, NO_ROOM)
            assert await room.activate_room(HUB, room_id) == m.activate(room_id)
        elif isinstance(action, End):
            room_id = pick(self.room_ids, action.room, NO_ROOM)
            got = await room.end_room(HUB, room_id, "hangup", took_place=action.took_place)
            assert got == m.end(room_id, action.took_place)
        elif isinstance(action, Cancel):
            token_id = pick(self.issued, action.token, NEVER_ISSUED)
            owner = m.tokens[token_id].spoke if token_id in m.tokens else SPOKES[0]
            spoke = owner if action.own_spoke else next(s for s in SPOKES if s != owner)
            got = await outcome(room.cancel(spoke, token_id))
            event(f"cancel: {getattr(got, '__name__', 'done')}")
            assert got is m.cancel(spoke, token_id)
        elif isinstance(action, Advance):
            self.clock.now += timedelta(minutes=action.minutes)
            await self.tick()
        else:
            self.clock.now = next_boundary(self.clock.now) + timedelta(minutes=action.late)
            await self.tick()

    async def check(self) -> None:
        """The store agrees with the model, and keeps the invariants."""
        m = self.model
        snap = await self.room.snapshot(HUB)
        waiting = [t.id for t in snap.waiting]
        held = [t.id for t in snap.held]
        # Invariants, from the store alone.
        assert len(set(waiting)) == len(waiting)
        assert len(set(held)) == len(held)
        assert not set(waiting) & set(held), "a token both waiting and held"
        # Every token issued, as the snapshot shows it or else as read on its own.
        tokens = {t.id: t for t in (*snap.waiting, *snap.held, *snap.today)}
        for token_id in self.issued:
            if token_id not in tokens:
                token = await self.room.token(HUB, token_id)
                assert token is not None, f"token {token_id} was lost"
                tokens[token_id] = token
        numbers = [(t.date, t.number) for t in tokens.values()]
        assert len(set(numbers)) == len(numbers), "a number given twice in a service day"
        for token in tokens.values():
            assert token.date == token.issued_at.astimezone(TZ).strftime("%Y%m%d")
            assert token.id == f"{HUB}.{token.date}.{token.number}"
        for token_id, token in tokens.items():
            before = self.seen.get(token_id)
            if before is None:
                assert token.state in (S.WAITING, S.SCHEDULED), token
            elif before is not token.state:
                assert token.state in MOVES[before], f"{token_id}: {before} -> {token.state}"
            self.seen[token_id] = token.state
            places = (token_id in waiting, token_id in held)
            if token.state is S.WAITING:
                assert places == (True, False), token
            elif token.state in (S.SCHEDULED, S.CARRIED_OVER):
                assert places == (False, True), token
            else:  # called, in consultation, or over
                assert places == (False, False), token
            if token.state in (S.CALLED, S.IN_CONSULTATION):
                assert token.room is not None
                assert token.doctor == DOCTOR
            elif token.state in PENDING:
                assert token.room is None
        assert set(waiting) | set(held) <= set(self.issued), "an unknown token in the queue"
        # Agreement with the model.
        assert waiting == m.queue, f"queue: store {m.names(waiting)}, model {m.names(m.queue)}"
        assert held == m.held, f"held: store {m.names(held)}, model {m.names(m.held)}"
        assert {t: tokens[t].state for t in self.issued} == {
            t: m.tokens[t].state for t in self.issued
        }
        for token_id in self.issued:
            if m.tokens[token_id].state in (S.CALLED, S.IN_CONSULTATION, S.COMPLETED):
                assert tokens[token_id].room == m.tokens[token_id].room
        if m.window is None:
            assert (snap.window, snap.closes_at) == (None, None)
        else:
            assert (snap.window, snap.closes_at) == (m.window.start.isoformat(), m.window.end)
        # Today's tokens by number, after the earlier days' tokens not over yet: yesterday's,
        # and any still queued or held (see WaitingRoom.snapshot).
        date = self.room.service_date(HUB)
        yesterday = self.room.service_date(HUB, self.clock.now - timedelta(days=1))
        shown = [t.id for t in snap.today]
        assert len(set(shown)) == len(shown)
        assert set(shown) <= set(m.tokens)
        earlier = [t for t in shown if m.tokens[t].date != date]
        assert shown[: len(earlier)] == earlier, "earlier days' tokens come first"
        assert set(earlier) == {
            t.id
            for t in m.tokens.values()
            if t.date != date
            and t.state not in FINAL
            and (t.date == yesterday or t.id in m.queue or t.id in m.held)
        }
        today = sorted((t for t in m.tokens.values() if t.date == date), key=lambda t: t.number)
        assert shown[len(earlier) :] == [t.id for t in today]


async def play(store: Redis, directory: Directory, at_closing: str, scenario: Any) -> None:
    start, steps = scenario
    run = Run(store, directory, at_closing, start)
    await run.tick()
    await run.check()
    for i, action in enumerate(steps):
        try:
            await run.step(action)
            await run.check()
        except AssertionError as exc:
            exc.add_note(f"at step {i}: {action}, the model being {run.model.describe()}")
            raise


#: Sequences that once showed a bug, always played first.
REGRESSIONS = [
    # Two normal tokens issued at 08:30, then an urgent one at 09:00 (counting as issued at
    # 08:30): first in, first out among equal counted times puts it after both, and in any case
    # it must not overtake the second while staying behind the first, issued at the same moment.
    (8 * 60 + 30, [Issue(0, False), Issue(0, False), Jump(0), Issue(0, True)]),
    # Two tokens carried over to the next window; the first is called and its room ends before
    # media flowed: it goes back to its own place, at the head, not behind the second.
    (10 * 60, [Issue(0, False), Issue(0, False), Jump(0), Jump(0), CallNext(), End(0, False)]),
]


def with_regressions(test: Any) -> Any:
    for scenario in reversed(REGRESSIONS):
        test = example(scenario=scenario)(test)
    return test


@pytest.mark.parametrize("at_closing", POLICIES)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@with_regressions
@given(scenario=scenarios)
async def test_lifecycle_matches_the_model(
    directories: dict[str, Directory], at_closing: str, scenario: Any
) -> None:
    store = open_store(None)  # a fresh embedded store for each example
    try:
        await play(store, directories[at_closing], at_closing, scenario)
    finally:
        await store.aclose()


@pytest.mark.parametrize("at_closing", POLICIES)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@with_regressions
@given(scenario=scenarios)
async def test_lifecycle_matches_the_model_on_redis(
    redis_server: Any, directories: dict[str, Directory], at_closing: str, scenario: Any
) -> None:
    store = open_store(redis_server.url)
    try:
        await store.flushall()
        await play(store, directories[at_closing], at_closing, scenario)
    finally:
        await store.aclose()
