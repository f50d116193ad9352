"""Example: an agent actor that calls other actors' tools, itself exposed as tools.

The assistant plans a small instruction (a deterministic planner: no model) and
carries the plan out as tool calls through the mesh, as the principal
`assistant`:

- `assistant.run` `{"task": "count", "key": "user-42", "times": 3}`:
  `counter.add` `times` times, then `echo.say` the new value;
  `{"task": "read", "key": ...}`: `counter.read`, then `echo.say` it;
- `assistant.reset` `{"key": ...}`: `counter.read`, `counter.clear`, then
  `echo.say` what it was. It needs an operator's approval (the dashboard's
  approvals inbox) before it runs.

The approval is on the assistant's own tool, not on `counter.clear` inside the
plan: the call then waits in the assistant's mailbox before any step runs, so a
pending reset survives restarts of every process (the caller keeps waiting, up
to its deadline), and once approved the plan runs once. A nested call waiting
for approval would tie the wait to this worker's in-flight ask instead.

It works only with grants: the caller needs one for the assistant's tools, and
the principal `assistant` needs them for the counter and echo tools (`mesh.toml`'s
`[[grants]]` sets both up at `make up`). A step that fails (denied, timed out, or
the tool raised) stops the plan: the call fails with `PlanFailed`, which names
the step and carries the tool's error code; the caller sees `ToolFailed` with
`remote.code == "plan_failed"`.

The nested calls are asks, which are not deduplicated, so a plan that ran again
would count again: the mailbox delivers a call once (`max_deliver=1`, which a
call held for approval does not spend); a call whose worker died mid-plan goes
to the dead letters instead of running twice.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec

from actormesh import Actor, ActorMeshError, Context, MailboxConfig, Message, ToolError, tool

__all__ = [
    "Assistant",
    "Call",
    "PlanFailed",
    "Report",
    "Reset",
    "Run",
    "Step",
    "plan",
]

#: Where a planned call's text takes the counter's value from the steps before it.
VALUE = "{value}"

CounterKey = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Run(Message):
    """An instruction: `count` adds one `times` times, `read` reads the counter."""

    task: Literal["count", "read"]
    #: The counter the task is about (an instance of `counter`).
    key: CounterKey
    times: Annotated[int, msgspec.Meta(ge=1, le=20)] = 1


class Reset(Message):
    """Clear the counter `key`."""

    key: CounterKey


class Call(msgspec.Struct, frozen=True, kw_only=True):
    """One planned tool call; `{value}` in a string argument is filled in with the
    counter value the steps before it returned."""

    tool: str
    args: dict[str, Any]


class Step(msgspec.Struct, kw_only=True):
    """One call the assistant made, and what it returned."""

    tool: str
    args: dict[str, Any]
    result: Any


class Report(msgspec.Struct, kw_only=True):
    """What the assistant did: the counter's last value, what echo said, every step."""

    task: Literal["count", "read", "reset"]
    key: str
    value: int
    said: str
    steps: list[Step]


class PlanFailed(ActorMeshError):
    """A step of the plan failed; the steps before it stay done.

    Not retryable: running the plan again would repeat the steps that succeeded."""

    code = "plan_failed"
    retryable = False

    def __init__(self, step: int, call: Call, cause: ToolError) -> None:
        super().__init__(f"step {step} ({call.tool}) failed [{cause.code}]: {cause}")
        self.step = step
        self.tool = call.tool
        self.cause_code = cause.code


def plan(instruction: Run | Reset) -> list[Call]:
    """The tool calls that carry out `instruction`, in order. Deterministic: the
    same instruction always gives the same plan."""
    key = {"key": instruction.key}
    if isinstance(instruction, Reset):
        calls = [Call(tool="counter.read", args=key), Call(tool="counter.clear", args=key)]
        said = f"{instruction.key} was reset from {VALUE}"
    elif instruction.task == "count":
        calls = [Call(tool="counter.add", args={**key, "by": 1})] * instruction.times
        said = f"{instruction.key} is at {VALUE}"
    else:
        calls = [Call(tool="counter.read", args=key)]
        said = f"{instruction.key} reads {VALUE}"
    return [*calls, Call(tool="echo.say", args={"text": said})]


def _filled(args: dict[str, Any], value: int) -> dict[str, Any]:
    return {k: v.replace(VALUE, str(value)) if isinstance(v, str) else v for k, v in args.items()}


async def _carry_out(instruction: Run | Reset, ctx: Context) -> Report:
    """Run `instruction`'s plan step by step, as the principal `assistant`, within
    the deadline of the call being handled."""
    steps: list[Step] = []
    value, said = 0, ""
    for n, call in enumerate(plan(instruction), start=1):
        args = _filled(call.args, value)
        try:
            result = await ctx.tools.call(call.tool, args)
        except ToolError as exc:
            raise PlanFailed(n, call, exc) from exc
        steps.append(Step(tool=call.tool, args=args, result=result))
        if call.tool.startswith("counter."):
            value = int(result)
        elif isinstance(result, dict):
            said = str(result.get("text", ""))
    task = "reset" if isinstance(instruction, Reset) else instruction.task
    return Report(task=task, key=instruction.key, value=value, said=said, steps=steps)


class Assistant(Actor):
    """Plans an instruction and carries it out with the counter and echo tools."""

    actor_type = "assistant"
    keyless = True
    mailbox: ClassVar[MailboxConfig] = MailboxConfig(max_deliver=1)

    @tool
    async def run(self, msg: Run, ctx: Context) -> Report:
        """Count or read a counter with the counter and echo tools.

        `count` adds one `times` times, `read` reads it; echo then says the
        value. Returns every step."""
        return await _carry_out(msg, ctx)

    @tool(needs_approval=True)
    async def reset(self, msg: Reset, ctx: Context) -> Report:
        """Clear a counter, after an operator approves the call.

        Reads the counter, clears it, and echo says what it was. Returns every
        step. Give the call time to wait for the operator (its timeout)."""
        return await _carry_out(msg, ctx)
