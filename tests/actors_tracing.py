"""Actors the observability tests run in worker processes (`tests.actors_tracing:Alpha`).

Alpha asks Beta, Beta asks Gamma: one ask from a test crosses three worker
processes, which is what the trace test follows. Meter has a handler that
works and one that fails for good, for the metrics test.
"""

from __future__ import annotations

import logging

from actormesh import Actor, Context, HandlerError, Message, SupervisionPolicy

log = logging.getLogger("actors_tracing")


class Hop(Message):
    """Pass along the chain; the reply lists who handled it, in order."""

    note: str = ""


class Alpha(Actor):
    actor_type = "alpha"

    async def hop(self, msg: Hop, ctx: Context) -> list[str]:
        after = await ctx.ref("beta", self.key).ask(Hop(note=msg.note), reply_type=list[str])
        return ["alpha", *after]


class Beta(Actor):
    actor_type = "beta"

    async def hop(self, msg: Hop, ctx: Context) -> list[str]:
        after = await ctx.ref("gamma", self.key).ask(Hop(note=msg.note), reply_type=list[str])
        return ["beta", *after]


class Gamma(Actor):
    actor_type = "gamma"

    async def hop(self, msg: Hop) -> list[str]:
        # The trace test finds this line in the worker's JSON log, with the trace id.
        log.info("gamma reached: %s", msg.note)
        return ["gamma"]


class Work(Message):
    pass


class Fail(Message):
    pass


class Meter(Actor):
    actor_type = "meter"
    # Restart on every failure, without ever reaching the escalation intensity.
    supervision = SupervisionPolicy(on_error="restart", max_restarts=10_000, within=1.0)

    async def work(self, msg: Work) -> None:
        pass

    async def fail(self, msg: Fail) -> None:
        raise HandlerError("this message always fails", code="always_fails", retryable=False)
