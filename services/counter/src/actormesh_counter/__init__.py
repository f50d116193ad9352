"""Example: a keyed counter with durable state. One instance per key (e.g. user-42).

`state: CounterState` makes the count durable: it is loaded when the key
activates and committed (compare-and-set) after each change, before the message
is acked, so a crash or a restart loses no acked increment and applies none
twice. Idle keys are passivated after five minutes; their count stays stored.
"""

import msgspec

from actormesh import Actor, Message, Passivation


class Inc(Message):
    by: int = 1


class Get(Message):
    pass


class Reset(Message):
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


__all__ = ["Counter", "CounterState", "Get", "Inc", "Reset"]
