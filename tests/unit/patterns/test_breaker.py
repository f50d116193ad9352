"""Circuit breaker: a model-based state machine test, plus the async surfaces. No sleeps."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from actormesh.patterns import (
    BreakerConfig,
    BreakerPermit,
    CircuitBreaker,
    CircuitOpen,
    CircuitState,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def state_of(breaker: CircuitBreaker) -> CircuitState:
    # Read through a call: mypy would otherwise keep a narrowed property type.
    return breaker.state


class Ignored(Exception):
    """An error the breaker is configured not to count as a failure."""


@dataclass
class ModelPermit:
    epoch: int
    probe: bool


class Model:
    """The breaker's specification, written as plainly as possible."""

    def __init__(self, threshold: int, duration: float, probes: int) -> None:
        self.threshold, self.duration, self.probes = threshold, duration, probes
        self.state = CircuitState.CLOSED
        self.epoch = 0
        self.consecutive = 0
        self.opened_at = 0.0
        self.admitted = 0
        self.probe_ok = 0
        self.successes = self.failures = self.rejections = self.trips = 0
        self.transitions: list[tuple[CircuitState, CircuitState]] = []

    def go(self, new: CircuitState, now: float) -> None:
        self.transitions.append((self.state, new))
        self.state = new
        self.epoch += 1
        self.admitted = self.probe_ok = 0
        if new is CircuitState.OPEN:
            self.opened_at = now
            self.trips += 1
        if new is CircuitState.CLOSED:
            self.consecutive = 0

    def refresh(self, now: float) -> None:
        if self.state is CircuitState.OPEN and now >= self.opened_at + self.duration:
            self.go(CircuitState.HALF_OPEN, now)

    def admit(self, now: float) -> ModelPermit | None:
        self.refresh(now)
        if self.state is CircuitState.CLOSED:
            return ModelPermit(self.epoch, False)
        if self.state is CircuitState.HALF_OPEN and self.admitted < self.probes:
            self.admitted += 1
            return ModelPermit(self.epoch, True)
        self.rejections += 1
        return None

    def record(self, permit: ModelPermit, outcome: str, now: float) -> None:
        if outcome == "cancelled":
            if permit.probe and permit.epoch == self.epoch:
                self.admitted -= 1
            return
        failed = outcome == "failure"
        if failed:
            self.failures += 1
        else:
            self.successes += 1
        self.refresh(now)
        if permit.epoch != self.epoch:
            return
        if self.state is CircuitState.CLOSED:
            self.consecutive = self.consecutive + 1 if failed else 0
            if self.consecutive >= self.threshold:
                self.go(CircuitState.OPEN, now)
        elif failed:
            self.go(CircuitState.OPEN, now)
        else:
            self.probe_ok += 1
            if self.probe_ok >= self.probes:
                self.go(CircuitState.CLOSED, now)


OUTCOMES = st.sampled_from(["success", "failure", "cancelled", "ignored"])


def _error(outcome: str) -> BaseException | None:
    return {
        "success": None,
        "failure": ConnectionError("down"),
        "cancelled": asyncio.CancelledError(),
        "ignored": Ignored("bad input"),
    }[outcome]


class BreakerMachine(RuleBasedStateMachine):
    @initialize(
        threshold=st.integers(1, 4), duration=st.sampled_from([5.0, 30.0]), probes=st.integers(1, 3)
    )
    def setup(self, threshold: int, duration: float, probes: int) -> None:
        self.clock = FakeClock()
        self.seen: list[tuple[CircuitState, CircuitState]] = []
        config = BreakerConfig(
            failure_threshold=threshold,
            open_duration=duration,
            half_open_probes=probes,
            is_failure=lambda e: not isinstance(e, Ignored),
        )
        self.breaker = CircuitBreaker(
            "m", config, clock=self.clock, on_state_change=lambda b, o, n: self.seen.append((o, n))
        )
        self.model = Model(threshold, duration, probes)
        self.held: list[tuple[BreakerPermit, ModelPermit]] = []

    def _admit(self) -> tuple[BreakerPermit, ModelPermit] | None:
        expected = self.model.admit(self.clock.now)
        refused: CircuitOpen | None = None
        try:
            permit = self.breaker.admit()
        except CircuitOpen as exc:
            refused = exc
        if refused is not None:
            assert expected is None
            assert refused.name == "m"
            assert refused.retry_after >= 0
            return None
        assert expected is not None
        return permit, expected

    @rule(dt=st.sampled_from([0.0, 1.0, 5.0, 29.0, 30.0, 31.0]))
    def advance(self, dt: float) -> None:
        self.clock.now += dt

    @rule(outcome=OUTCOMES)
    def call(self, outcome: str) -> None:
        pair = self._admit()
        if pair is not None:
            tripped = pair[0].record(_error(outcome))
            trips = self.model.trips
            self.model.record(pair[1], outcome, self.clock.now)
            assert tripped == (self.model.trips > trips)

    @rule()
    def begin(self) -> None:
        pair = self._admit()
        if pair is not None:
            self.held.append(pair)

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data(), outcome=OUTCOMES)
    def finish(self, data: st.DataObject, outcome: str) -> None:
        index = data.draw(st.integers(0, len(self.held) - 1))
        permit, expected = self.held.pop(index)
        permit.record(_error(outcome))
        self.model.record(expected, outcome, self.clock.now)
        # A second record of the same permit changes nothing.
        permit.record(ConnectionError("again"))

    @invariant()
    def agrees_with_the_model(self) -> None:
        if not hasattr(self, "breaker"):
            return
        self.model.refresh(self.clock.now)
        m = self.breaker.metrics()
        assert m.state is self.model.state
        assert (m.successes, m.failures, m.rejections, m.trips) == (
            self.model.successes,
            self.model.failures,
            self.model.rejections,
            self.model.trips,
        )
        assert self.seen == self.model.transitions


BreakerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestBreakerStateMachine = BreakerMachine.TestCase


def test_defaults_match_the_design() -> None:
    c = BreakerConfig()
    assert (c.failure_threshold, c.open_duration, c.half_open_probes) == (5, 30.0, 1)


async def test_async_with_counts_failures_and_reraises() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("db", BreakerConfig(failure_threshold=2), clock=clock)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            async with breaker:
                raise ConnectionError("down")
    assert state_of(breaker) is CircuitState.OPEN
    clock.now += 12
    with pytest.raises(CircuitOpen) as info:
        async with breaker:
            pytest.fail("the body must not run while open")
    assert info.value.name == "db"
    assert info.value.retry_after == pytest.approx(18.0)
    assert info.value.retryable


async def test_call_passes_arguments_and_closes_after_a_good_probe() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("svc", BreakerConfig(failure_threshold=1), clock=clock)

    async def add(a: int, b: int) -> int:
        return a + b

    async def boom() -> int:
        raise OSError("x")

    with pytest.raises(OSError, match="x"):
        await breaker.call(boom)
    assert state_of(breaker) is CircuitState.OPEN
    clock.now += 30
    assert state_of(breaker) is CircuitState.HALF_OPEN
    assert await breaker.call(add, 2, 3) == 5
    assert state_of(breaker) is CircuitState.CLOSED


async def test_half_open_admits_only_its_probes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "p", BreakerConfig(failure_threshold=1, half_open_probes=2), clock=clock
    )
    breaker.admit().record(ValueError())
    clock.now += 30
    first, second = breaker.admit(), breaker.admit()
    with pytest.raises(CircuitOpen) as info:
        breaker.admit()
    assert info.value.retry_after == 0.0
    first.record(None)
    assert state_of(breaker) is CircuitState.HALF_OPEN
    second.record(None)
    assert state_of(breaker) is CircuitState.CLOSED


async def test_cancellation_inside_the_breaker_is_not_a_failure() -> None:
    breaker = CircuitBreaker("c", BreakerConfig(failure_threshold=1))
    entered = asyncio.Event()

    async def slow() -> None:
        async with breaker:
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(slow())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    m = breaker.metrics()
    assert m.state is CircuitState.CLOSED
    assert (m.failures, m.successes) == (0, 0)


async def test_a_cancelled_probe_frees_its_slot() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("c", BreakerConfig(failure_threshold=1), clock=clock)
    breaker.admit().record(ValueError())
    clock.now += 30
    probe = breaker.admit()
    probe.record(asyncio.CancelledError())
    breaker.admit().record(None)
    assert state_of(breaker) is CircuitState.CLOSED


async def test_concurrent_tasks_keep_their_own_permits() -> None:
    breaker = CircuitBreaker("shared", BreakerConfig(failure_threshold=2))
    inside = asyncio.Event()
    release = asyncio.Event()

    async def holder(fail: bool) -> None:
        async with breaker:
            inside.set()
            await release.wait()
            if fail:
                raise ConnectionError

    ok = asyncio.create_task(holder(False))
    bad = asyncio.create_task(holder(True))
    await inside.wait()
    release.set()
    await ok
    with pytest.raises(ConnectionError):
        await bad
    m = breaker.metrics()
    assert (m.successes, m.failures) == (1, 1)


async def test_a_failing_listener_does_not_break_calls(caplog: pytest.LogCaptureFixture) -> None:
    def broken(b: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        raise RuntimeError("metrics backend down")

    breaker = CircuitBreaker("l", BreakerConfig(failure_threshold=1), on_state_change=broken)
    seen: list[CircuitState] = []
    breaker.add_listener(lambda b, old, new: seen.append(new))
    with pytest.raises(KeyError):
        async with breaker:
            raise KeyError("k")
    assert seen == [CircuitState.OPEN]
    assert "listener failed" in caplog.text
    breaker.reset()
    assert state_of(breaker) is CircuitState.CLOSED
    assert seen == [CircuitState.OPEN, CircuitState.CLOSED]


async def test_aexit_without_aenter_is_an_error() -> None:
    breaker = CircuitBreaker()
    with pytest.raises(RuntimeError, match="without a matching"):
        await breaker.__aexit__(None, None, None)
