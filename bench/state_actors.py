"""bench_state's many-keys actor (a module of its own, so importing it leaves the
other benchmarks' workers, and their idle RSS, as they were).

Run as ``python -m actormesh worker bench.state_actors:StateCounter``.
"""

from __future__ import annotations

import os

from actormesh import Actor, Passivation
from actormesh_counter import CounterState, Get, Inc


def _idle_after() -> float:
    return float(os.environ.get("BENCH_IDLE_AFTER", "30"))


class StateCounter(Actor):
    """The example counter (`actormesh_counter.Counter`: same state, same messages)
    passivated after ``BENCH_IDLE_AFTER`` seconds idle, with no bound on live
    instances (read at import: the driver sets it in the worker's environment)."""

    actor_type = "statecounter"
    state: CounterState
    passivation = Passivation(idle_after=_idle_after())

    async def inc(self, msg: Inc) -> None:
        self.state.value += msg.by

    async def get(self, msg: Get) -> int:
        return int(self.state.value)
