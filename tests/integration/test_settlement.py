"""Issue 15, items 6 and 7: no message left unsettled, nothing stranded.

Whatever a message does to the decoder or the handler, it ends acked, nacked
with backoff or dead-lettered with a reason; when the dead-letter stream is
unavailable at the last delivery, the message waits in the mailbox and is
dead-lettered once the stream is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from nats.js.api import ConsumerConfig

from actormesh import HandleMessage, Mesh, MessageInput, WorkerConfig, WorkerInterceptor
from actormesh._actor import spec_of
from actormesh.lowlevel import DeadLetters, consumer_config, ensure_system_streams
from actormesh.testing import running_worker
from tests.actors_settlement import Misbehaving, Raise, Tally, Total

SEED = 15
KEYS = [f"k{i}" for i in range(8)]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


# -- the inputs -----------------------------------------------------------------------

#: Garbage for the headers the worker reads. Deadlines that do not parse as
#: milliseconds are no deadline; those that do and are past dead-letter the ask.
BAD_DEADLINES = ["soon", "", "12:00", "1e999", "9" * 5000, "0x10", "None", " ", "\u00e9"]
PAST_DEADLINES = ["1", "-5", "0"]
BAD_TRACEPARENTS = [
    "00-zz-yy-01",
    "x" * 1000,
    "",
    "00-" + "0" * 32 + "-" + "0" * 16 + "-00",
    "ff-" + "f" * 32 + "-" + "f" * 16 + "-ff",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    "\u00e9t\u00e9",
]
#: Reply subjects no one can publish to: a worker answering them must not lose
#: its connection (a subject past the server's control line limit would).
BAD_REPLY_TOS = [
    "",
    "a b",
    "foo.*",
    "foo.>",
    "x" * 5000,
    "..",
    ".",
    "\u00e9",
    "a\tb",
    "x." * 300,
    "_INBOX.nobody",
]


@dataclass
class Case:
    key: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)
    #: What a valid message adds to its key's total; None: invalid.
    by: int | None = None


def _invalid_bodies(rng: random.Random, max_payload: int) -> list[bytes]:
    deep = 10_000
    return [
        rng.randbytes(rng.randrange(0, 200)),
        b'{"type":"Add\x80","by":1}',
        b'{"ty\xffpe":"Add","by":1}',
        b'{"type":"Add","by":1,"\xc3":2}',
        b'{"type":"Add","by":"\xff\xfe"}',
        b"[" * deep + b"]" * deep,
        b'{"a":' * deep + b"1" + b"}" * deep,
        b'{"type":"Add","by":' + b"[" * deep + b"]" * deep + b"}",
        b'{"type":"Add","by":"1"}',
        b'{"type":"Add","by":1.5}',
        b'{"type":"Add","by":null}',
        b'{"type":"Add","by":true}',
        b'{"type":"Add","by":99999999999999999999999999}',
        b'{"type":"Add"}',
        b'{"type":"Add","by":1,"extra":0}',
        b'{"type":"Nope"}',
        b'{"by":1}',
        b'{"type":1,"by":1}',
        b'{"type":null}',
        b"[]",
        b'"Add"',
        b"null",
        b"",
        b'{"type":"Add","by":1',
        b'{"type":"Add","by":1}}',
        b'{"type":"Add","by":1}' + bytes([rng.randrange(128, 256)]),
        # Near the size limit: the dead letter must still fit its reason headers.
        b'{"type":"Add","by":1,"pad":"' + b"x" * (max_payload - 4096) + b'"}',
        b'{"type":"Add","by":1,"pad":"' + b"y" * (max_payload - 330) + b'"}',
    ]


def fuzz_cases(n_invalid: int, n_valid: int, max_payload: int, stream: str) -> list[Case]:
    """Seeded: invalid inputs of every kind, valid ones interleaved, garbage headers."""
    rng = random.Random(SEED)
    decoder = spec_of(Tally).decoder
    cases: list[Case] = []
    huge = 0
    while len(cases) < n_invalid:
        bodies = _invalid_bodies(rng, max_payload)
        data = rng.choice(bodies)
        if len(data) > 100_000:
            if huge >= 6:
                continue  # a few huge ones are enough
            huge += 1
        with contextlib.suppress(Exception):
            decoder.decode(data)
            continue  # by chance valid: not an invalid input
        case = Case(key=rng.choice(KEYS), data=data)
        if len(data) < 100_000:
            _garble(rng, case, stream, valid=False)
        cases.append(case)
    for _ in range(n_valid):
        by = rng.randrange(1, 1000)
        case = Case(key=rng.choice(KEYS), data=b'{"type":"Add","by":%d}' % by, by=by)
        _garble(rng, case, stream, valid=True)
        cases.insert(rng.randrange(len(cases) + 1), case)
    return cases


def _garble(rng: random.Random, case: Case, stream: str, *, valid: bool) -> None:
    h = case.headers
    if rng.random() < 0.3:
        h["Am-Deadline"] = rng.choice(BAD_DEADLINES + ([] if valid else PAST_DEADLINES))
    if rng.random() < 0.3:
        h["traceparent"] = rng.choice(BAD_TRACEPARENTS)
        if rng.random() < 0.5:
            h["tracestate"] = rng.choice(BAD_TRACEPARENTS)
    if rng.random() < 0.3:
        h["Am-Reply-To"] = rng.choice(BAD_REPLY_TOS)
    if rng.random() < 0.2:
        # Some ids repeat: the mailbox stores the first only (the PubAck says so).
        h["Nats-Msg-Id"] = f"dup-{rng.randrange(30)}"
    if rng.random() < 0.05:
        # Meant for the mailbox: must not make the dead-letter stream refuse it.
        h["Nats-Expected-Stream"] = stream


@dataclass
class Published:
    invalid: int = 0
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KEYS, 0))
    duplicates: int = 0


async def publish_raw(url: str, mesh: Mesh, cases: list[Case]) -> Published:
    """Publish with a plain nats-py client, as any NATS user could."""
    out = Published()
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for case in cases:
            subject = mesh.subjects.mailbox(Tally.actor_type, case.key)
            ack = await js.publish(subject, case.data, headers=case.headers or None)
            if ack.duplicate:
                out.duplicates += 1
            elif case.by is None:
                out.invalid += 1
            else:
                out.totals[case.key] += case.by
    finally:
        await nc.close()
    return out


async def settled_all(mesh: Mesh, actor_type: str, dead: int) -> bool:
    """The mailbox is empty, nothing pending or unacked, `dead` dead letters stored."""
    js, subjects = mesh.js, mesh.subjects
    consumer = await js.consumer_info(
        subjects.mailbox_stream(actor_type), subjects.consumer(actor_type)
    )
    mailbox = await js.stream_info(subjects.mailbox_stream(actor_type))
    dlq = await js.stream_info(subjects.dlq_stream, subjects_filter=subjects.dlq(actor_type))
    return (
        consumer.num_pending == 0
        and consumer.num_ack_pending == 0
        and mailbox.state.messages == 0
        and dlq.state.messages >= dead
    )


async def check_outcome(mesh: Mesh, sent: Published) -> None:
    await eventually(lambda: settled_all(mesh, Tally.actor_type, sent.invalid), timeout=120)
    info = await mesh.js.stream_info(mesh.subjects.dlq_stream)
    # Exactly one dead letter per stored invalid input (the DLQ dedupes by stream seq).
    assert info.state.messages == sent.invalid
    letters = await DeadLetters(mesh).list(Tally.actor_type, limit=sent.invalid + 10)
    assert len(letters) == sent.invalid
    assert {d.error_code for d in letters} <= {"bad_message", "deadline_exceeded"}
    assert all(d.error_message and d.error_type for d in letters)
    assert any(d.headers.get("Am-Truncated-From") for d in letters)  # the huge one fits
    for key, total in sent.totals.items():
        assert await mesh.ref(Tally, key).ask(Total(), timeout=10) == total


# -- the fuzz tests --------------------------------------------------------------------


async def test_fuzzed_inputs_are_all_settled_in_process(mesh: Mesh, nats_url: str) -> None:
    stream = mesh.subjects.mailbox_stream(Tally.actor_type)
    cases = fuzz_cases(2000, 1000, mesh.nc.max_payload, stream)
    async with running_worker(mesh, Tally, WorkerConfig(concurrency=16)) as worker:
        sent = await publish_raw(nats_url, mesh, cases)
        assert sent.invalid > 1500 and sent.duplicates > 0
        await check_outcome(mesh, sent)
        assert worker.status == "running"
        assert worker.restarts == 0
        assert worker.mesh.nc.stats["reconnects"] == 0  # no garbage reply broke it


@pytest.fixture
def worker_process(
    subprocess_env: dict[str, str], tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "actormesh", "worker", "tests.actors_settlement:Tally"],
            # Tracing on: the garbage traceparent headers reach its parser.
            env=dict(subprocess_env, OTEL_TRACES_EXPORTER="console"),
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        print(log.read_text()[-5000:])


async def test_fuzzed_inputs_are_all_settled_by_a_worker_process(
    mesh: Mesh, nats_url: str, worker_process: subprocess.Popen[bytes]
) -> None:
    async def ready() -> bool:
        try:
            total: int = await mesh.ref(Tally, "probe").ask(Total(), timeout=1)
            return total == 0
        except Exception:
            return False

    await eventually(ready, timeout=30)
    stream = mesh.subjects.mailbox_stream(Tally.actor_type)
    cases = fuzz_cases(700, 300, mesh.nc.max_payload, stream)
    sent = await publish_raw(nats_url, mesh, cases)
    await check_outcome(mesh, sent)
    assert worker_process.poll() is None  # alive: nothing killed or escalated it


# -- whatever the handler raises ----------------------------------------------------


@pytest.mark.parametrize(
    "what",
    [
        "SystemExit",
        "KeyboardInterrupt",
        "MemoryError",
        "RecursionError",
        "CancelledError",
        "HandlerError",
        "ValueError",
    ],
)
async def test_whatever_a_handler_raises_the_message_is_settled(mesh: Mesh, what: str) -> None:
    Misbehaving.ran.clear()
    async with running_worker(mesh, Misbehaving) as worker:
        await mesh.ref(Misbehaving, "m").tell(Raise(what=what))

        async def dead() -> bool:
            return await settled_all(mesh, Misbehaving.actor_type, 1)

        await eventually(dead, timeout=30)
        assert worker.status == "running"
    assert Misbehaving.ran[what] == Misbehaving.mailbox.max_deliver
    (letter,) = await DeadLetters(mesh).list(Misbehaving.actor_type)
    assert letter.error_type == what
    assert letter.deliveries == Misbehaving.mailbox.max_deliver


class Breaks(WorkerInterceptor):
    """An interceptor with a bug: it raises around `Raise(what="interceptor")`."""

    def intercept_message(self, next: HandleMessage) -> HandleMessage:
        async def step(inp: MessageInput) -> BaseException | None:
            if isinstance(inp.message, Raise) and inp.message.what == "interceptor":
                raise RuntimeError("an interceptor's bug")
            return await next(inp)

        return step


async def test_a_message_an_interceptor_breaks_on_is_settled(mesh: Mesh) -> None:
    Misbehaving.ran.clear()
    async with running_worker(mesh, Misbehaving) as worker:
        worker.add_interceptor(Breaks())
        ref = mesh.ref(Misbehaving, "m")
        await ref.tell(Raise(what="interceptor"))

        async def dead() -> bool:
            return await settled_all(mesh, Misbehaving.actor_type, 1)

        await eventually(dead, timeout=30)
        assert worker.status == "running" and worker.restarts == 0
        # Naked with backoff before its last delivery, like a handler failure.
        assert worker.redelivered == Misbehaving.mailbox.max_deliver - 1
    assert "interceptor" not in Misbehaving.ran
    (letter,) = await DeadLetters(mesh).list(Misbehaving.actor_type)
    assert (letter.error_code, letter.error_type) == ("internal_error", "RuntimeError")
    assert "an interceptor's bug" in letter.error_message
    assert letter.deliveries == Misbehaving.mailbox.max_deliver


# -- nothing stranded ----------------------------------------------------------------


async def test_dead_letter_stream_unavailable_at_the_last_delivery_then_restored(
    mesh: Mesh,
) -> None:
    js, subjects = mesh.js, mesh.subjects
    mailbox = subjects.mailbox_stream(Misbehaving.actor_type)
    durable = subjects.consumer(Misbehaving.actor_type)
    Misbehaving.ran.clear()
    async with running_worker(mesh, Misbehaving) as worker:
        # The dead-letter stream goes away (its node is down, say): stores to it fail.
        await js.delete_stream(subjects.dlq_stream)
        await mesh.ref(Misbehaving, "m").tell(Raise(what="HandlerError"))

        async def tried_past_the_last_delivery() -> bool:
            info = await js.consumer_info(mailbox, durable)
            delivered: int = info.delivered.consumer_seq
            return delivered >= Misbehaving.mailbox.max_deliver + 3

        # Redelivered past max_deliver, each time failing to dead-letter: not lost.
        await eventually(tried_past_the_last_delivery, timeout=30)
        assert (await js.stream_info(mailbox)).state.messages == 1
        assert worker.dead_lettered == 0
        # Its handler ran max_deliver times only: later deliveries only retry the DLQ.
        assert Misbehaving.ran["HandlerError"] == Misbehaving.mailbox.max_deliver

        await ensure_system_streams(js, subjects)  # the stream is back

        async def dead() -> bool:
            return await settled_all(mesh, Misbehaving.actor_type, 1)

        await eventually(dead, timeout=30)
        assert worker.dead_lettered == 1 and worker.status == "running"
    (letter,) = await DeadLetters(mesh).list(Misbehaving.actor_type)
    # The reason is the handler's, not "delivered too often".
    assert (letter.error_code, letter.error_type) == ("nope", "HandlerError")
    assert Misbehaving.ran["HandlerError"] == Misbehaving.mailbox.max_deliver


async def test_consumer_of_an_older_version_is_migrated_to_unlimited_deliveries(
    mesh: Mesh,
) -> None:
    """Consumers made with the server's max_deliver are updated in place."""
    js, subjects = mesh.js, mesh.subjects
    await mesh.declare(Misbehaving)
    stream = subjects.mailbox_stream(Misbehaving.actor_type)
    old = consumer_config(subjects, Misbehaving.actor_type, Misbehaving.mailbox)
    durable = subjects.consumer(Misbehaving.actor_type)
    old_cfg = ConsumerConfig.from_response(old.as_dict())
    old_cfg.max_deliver = Misbehaving.mailbox.max_deliver
    await js.add_consumer(stream, old_cfg)
    assert (await js.consumer_info(stream, durable)).config.max_deliver == 2
    async with running_worker(mesh, Misbehaving):
        info = await js.consumer_info(stream, durable)
        assert info.config.max_deliver == -1
