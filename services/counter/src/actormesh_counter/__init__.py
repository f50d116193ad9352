"""Example: a keyed counter with durable state. One instance per key (e.g. user-42).

`state: CounterState` makes the count durable: it is loaded when the key
activates and committed (compare-and-set) after each change, before the message
is acked, so a crash or a restart loses no acked increment and applies none
twice. Idle keys are passivated after five minutes; their count stays stored.

`Add`, `Read` and `Clear` do what `Inc`, `Get` and `Reset` do, exposed as tools
(`counter.add`, `counter.read`, `counter.clear`) for the assistant example.
Exposing a handler puts every message to it under grants (default deny), so the
tools are separate message types: plain tells and asks of `Inc`, `Get` and
`Reset` keep working without a grant.
"""

import msgspec

from actormesh import Actor, Message, Passivation, tool


class Inc(Message):
    by: int = 1


class Get(Message):
    pass


class Reset(Message):
    pass


class Add(Message):
    by: int = 1


class Read(Message):
    pass


class Clear(Message):
    pass


class CounterState(msgspec.Struct):
    value: int = 0


class Counter(Actor):
    state: CounterState
    passivation = Passivation(idle_after=300.0, max_instances=100_000)

    async def inc(self, msg: Inc) -> None:
        self.state.value += msg.by

    async def get(self, msg: Get) -> int:
        return self.state.value

    async def reset(self, msg: Reset) -> int:
        old, self.state.value = self.state.value, 0
        return old

    @tool
    async def add(self, msg: Add) -> int:
        """Add `by` to the counter named `key`; returns its new value."""
        self.state.value += msg.by
        return self.state.value

    @tool
    async def read(self, msg: Read) -> int:
        """The value of the counter named `key`."""
        return self.state.value

    @tool
    async def clear(self, msg: Clear) -> int:
        """Set the counter named `key` to zero; returns the value it had."""
        old, self.state.value = self.state.value, 0
        return old


__all__ = ["Add", "Clear", "Counter", "CounterState", "Get", "Inc", "Read", "Reset"]
