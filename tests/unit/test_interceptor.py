"""The worker interceptor seam, without a broker: composition, outcomes, declarations."""

from __future__ import annotations

import logging
import types
from typing import Any

import pytest

from actormesh import CallHandler, HandleMessage, MessageInput, Outcome, Worker, WorkerInterceptor
from actormesh._interceptor import (
    add_handler_interceptor,
    compose_handler,
    compose_message,
    handler_interceptors,
    overrides_outcome,
    report_outcome,
)
from actormesh.patterns import HandlerPolicy, policy


def an_input(reply: str = "$JS.ACK.S.C.3.9.9.1.0") -> MessageInput:
    msg: Any = types.SimpleNamespace(data=b"{}", subject="m.k", headers={}, reply=reply)
    return MessageInput(actor_type="a", key="k", subject="m.k", headers={}, msg=msg)


class Tagging(WorkerInterceptor):
    def __init__(self, name: str, seen: list[str]) -> None:
        self.name, self.seen = name, seen

    def intercept_message(self, next: HandleMessage) -> HandleMessage:
        async def step(input: MessageInput) -> BaseException | None:
            self.seen.append(self.name)
            return await next(input)

        return step

    def intercept_handler(self, next: CallHandler) -> CallHandler:
        async def call(input: MessageInput) -> Any:
            return f"{self.name}({await next(input)})"

        return call


async def test_the_first_interceptor_is_the_outermost() -> None:
    seen: list[str] = []

    async def innermost(input: MessageInput) -> BaseException | None:
        seen.append("core")
        return None

    async def handler(input: MessageInput) -> Any:
        return "h"

    chain = [Tagging("a", seen), Tagging("b", seen)]
    assert await compose_message(chain, innermost)(an_input()) is None
    assert seen == ["a", "b", "core"]
    assert await compose_handler(chain, handler)(an_input()) == "a(b(h))"


def test_defaults_pass_through_at_no_cost() -> None:
    async def innermost(input: MessageInput) -> BaseException | None:
        return None

    plain = WorkerInterceptor()
    assert compose_message([plain, plain], innermost) is innermost
    assert not overrides_outcome(plain)


def test_a_failing_outcome_hook_is_logged_once_and_the_rest_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    told: list[Outcome] = []

    class Broken(WorkerInterceptor):
        def outcome(
            self, worker: Worker, outcome: Outcome, input: MessageInput | None, seconds: float
        ) -> None:
            raise RuntimeError("no")

    class Counting(WorkerInterceptor):
        def outcome(
            self, worker: Worker, outcome: Outcome, input: MessageInput | None, seconds: float
        ) -> None:
            told.append(outcome)

    hooks = (Broken(), Counting())
    failing: set[int] = set()
    worker: Any = object()
    with caplog.at_level(logging.DEBUG, logger="actormesh.worker"):
        report_outcome(hooks, worker, "handled", an_input(), 0.1, failing)
        report_outcome(hooks, worker, "failed", an_input(), 0.1, failing)
    assert told == ["handled", "failed"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "Broken" in errors[0].getMessage()


def test_deliveries_are_read_from_the_ack_subject_on_demand() -> None:
    assert an_input().deliveries == 3
    assert an_input(reply="").deliveries == 1


def test_policy_declares_itself_as_the_handlers_interceptor() -> None:
    async def handler(self: object, msg: object) -> None:
        pass

    policy(timeout=1.0)(handler)
    (declared,) = handler_interceptors(handler)
    assert isinstance(declared, HandlerPolicy)
    other = HandlerPolicy()
    add_handler_interceptor(handler, other)
    assert handler_interceptors(handler) == (declared, other)


async def test_a_policy_interceptor_runs_the_call_under_the_policy() -> None:
    from actormesh.patterns import TaskTimeout

    async def hang(input: MessageInput) -> Any:
        import asyncio

        await asyncio.sleep(10)

    with pytest.raises(TaskTimeout):
        await HandlerPolicy(timeout=0.01).intercept_handler(hang)(an_input())
