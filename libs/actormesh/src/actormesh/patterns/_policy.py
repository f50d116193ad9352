"""Per-handler policies: a timeout, a retry policy and a circuit breaker, declared on a function.

``@policy(timeout=5, retry=RetryPolicy(), breaker=BreakerConfig())`` attaches a
frozen `HandlerPolicy` as ``fn.__actormesh_policy__`` and declares it as one of
the handler's own interceptors (``fn.__actormesh_interceptors__``), which the
worker runs inside its own chain; anyone else running the handler (a test, a
script) applies it with `run_with_policy`. The decorator does not wrap the
function, so calling it directly stays a plain call.

The layering, innermost first: each attempt runs under the timeout, each attempt
goes through the breaker (a timeout is a failure to it), and the retry loop is
outermost, so every attempt is timed and counted. An open circuit is never
retried in place: failing fast is the point of the breaker.

`_execute` is also the executor's engine; the observer hooks feed its metrics.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, TypeVarTuple

from .._interceptor import CallHandler, MessageInput, add_handler_interceptor
from .._retry import RetryPolicy
from .._retry import retry as _retry_loop  # `retry` is a parameter name below
from ._breaker import BreakerConfig, CircuitBreaker
from ._deadline import DeadlineExpired, within
from ._errors import CircuitOpen, TaskTimeout

__all__ = ["POLICY_ATTR", "HandlerPolicy", "policy", "policy_of", "run_with_policy"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
F = TypeVar("F", bound=Callable[..., Any])

#: The attribute `policy` sets on a function.
POLICY_ATTR = "__actormesh_policy__"


@dataclass(frozen=True, kw_only=True, slots=True)
class HandlerPolicy:
    """How one handler is run: per-attempt timeout, retries, and a breaker."""

    #: Seconds per attempt; None for no timeout.
    timeout: float | None = None
    #: None runs a single attempt.
    retry: RetryPolicy | None = None
    #: Shared by every call of the handler (in this process).
    breaker: CircuitBreaker | None = None

    def __post_init__(self) -> None:
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError("timeout must be > 0 (or None)")

    def intercept_handler(self, next: CallHandler) -> CallHandler:
        """Run the worker's handler call under this policy (a `HandlerInterceptor`)."""

        async def run(input: MessageInput) -> Any:
            return await run_with_policy(self, next, input)

        return run


def policy(
    *,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
    breaker: CircuitBreaker | BreakerConfig | None = None,
) -> Callable[[F], F]:
    """Declare how a handler is run; returns the function itself, annotated.

    A `BreakerConfig` gets a breaker of its own per decorated function, named
    after it; pass a `CircuitBreaker` to share one between handlers.
    """

    def attach(fn: F) -> F:
        if isinstance(breaker, BreakerConfig):
            name = str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "handler"))
            live: CircuitBreaker | None = CircuitBreaker(name, breaker)
        else:
            live = breaker
        declared = HandlerPolicy(timeout=timeout, retry=retry, breaker=live)
        setattr(fn, POLICY_ATTR, declared)
        add_handler_interceptor(fn, declared)
        return fn

    return attach


def policy_of(fn: object) -> HandlerPolicy | None:
    """The policy declared on `fn` (a function or a bound method), if any."""
    found = getattr(fn, POLICY_ATTR, None)
    return found if isinstance(found, HandlerPolicy) else None


async def run_with_policy(
    policy: HandlerPolicy | None, fn: Callable[[*Ts], Awaitable[T]], *args: *Ts
) -> T:
    """Await `fn(*args)` under `policy` (timeout, then breaker, then retry).

    Raises what `fn` raises when it is not retried; `TaskTimeout` for a timed-out
    attempt that is not retried; `CircuitOpen` when the breaker refuses;
    `RetryExhausted` (from the last failure) when the retries ran out.
    """
    if policy is None:
        return await fn(*args)
    return await _execute(
        fn, args, timeout=policy.timeout, retry=policy.retry, breaker=policy.breaker
    )


class _Observer(Protocol):
    def attempt_failed(self, exc: Exception) -> None: ...
    def timed_out(self) -> None: ...
    def retried(self) -> None: ...
    def tripped(self) -> None: ...


def _retry_if(policy: RetryPolicy) -> Callable[[Exception], bool]:
    def check(exc: Exception) -> bool:
        return not isinstance(exc, CircuitOpen) and policy.should_retry(exc)

    return check


async def _execute(
    fn: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    *,
    timeout: float | None,
    retry: RetryPolicy | None,
    breaker: CircuitBreaker | None,
    observer: _Observer | None = None,
    task: str | None = None,
) -> T:
    if retry is None or retry.attempts == 1:
        return await _attempt(fn, args, timeout, breaker, observer, task)

    on_retry = None
    if observer is not None:
        count = observer.retried

        def on_retry(attempt: int, exc: Exception, delay: float) -> None:
            count()

    return await _retry_loop(
        lambda: _attempt(fn, args, timeout, breaker, observer, task),
        retry,
        retry_if=_retry_if(retry),
        on_retry=on_retry,
    )


async def _attempt(
    fn: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    timeout: float | None,
    breaker: CircuitBreaker | None,
    observer: _Observer | None,
    task: str | None,
) -> T:
    permit = breaker.admit() if breaker is not None else None
    try:
        if timeout is None:  # every executor task without one: no coroutine around fn
            result = await fn(*args)
        else:
            try:
                result = await within(timeout, fn(*args))
            except DeadlineExpired as expired:
                # Only our own deadline becomes TaskTimeout; a TimeoutError raised
                # by `fn` itself is its own failure (`within` lets it through).
                if observer is not None:
                    observer.timed_out()
                raise TaskTimeout(timeout, task=task) from expired.__cause__
    except BaseException as exc:
        if observer is not None and isinstance(exc, Exception):
            observer.attempt_failed(exc)
        if permit is not None and permit.record(exc) and observer is not None:
            observer.tripped()
        raise
    if permit is not None:
        permit.record(None)
    return result
