"""Example: a keyed, stateful counter. One instance per key (e.g. user-42)."""

from actormesh import Actor, Message


class Inc(Message):
    by: int = 1


class Get(Message):
    pass


class Reset(Message):
    pass


class Counter(Actor):
    def __init__(self) -> None:
        self.value = 0

    async def inc(self, msg: Inc) -> None:
        self.value += msg.by

    async def get(self, msg: Get) -> int:
        return self.value

    async def reset(self, msg: Reset) -> int:
        old, self.value = self.value, 0
        return old


__all__ = ["Counter", "Get", "Inc", "Reset"]
