"""Issue 14: reading the connection, `actormesh._nats_parser.MessageParser`
against nats-py's own `Parser`, without a broker (CPU only, one process).

Each kind of read is what one side of the mesh gets from the server, 50
messages per read (about what a worker's read brought under the mesh bench's
asks, 256 in flight):

- ``worker, asks``: mailbox messages with actormesh's ask headers (deadline,
  reply inbox) and the JetStream ack subject as reply;
- ``worker, tells``: mailbox messages with a ``Nats-Msg-Id`` and a 128-byte body;
- ``asker``: PubAcks and replies on the asker's inbox (no headers).

Both parsers feed the same no-op client; the figure is the best of 7 rounds of
2,000 reads each, interleaved. Run: ``python -m bench.bench_parser``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from nats.protocol.parser import Parser

from actormesh._nats_parser import MessageParser

PER_READ = 50
ROUNDS = 7


class _Sink:
    async def _process_msg(self, *args: Any) -> None:
        return None


def _reads() -> dict[str, bytes]:
    ask_block = (
        b"NATS/1.0\r\nAm-Deadline: 1796110572167\r\n"
        b"Am-Reply-To: _INBOX.HK0D2m7I6X02rV1qghy7Hw.%d\r\n\r\n"
    )
    tell_block = b"NATS/1.0\r\nNats-Msg-Id: 3f2a9c0d5e6b7a81-%d\r\n\r\n"
    ack = b"$JS.ACK.BENCH_MBOX_BENCHSINK.benchsink.1.%d.%d.1764570000000000000.0"
    asks, tells, asker = bytearray(), bytearray(), bytearray()

    def hmsg(block: bytes, payload: bytes, i: int) -> bytes:
        size = len(block) + len(payload)
        line = b"HMSG bench.mbox.benchsink.k1 7 %s %d %d\r\n" % (ack % (i, i), len(block), size)
        return line + block + payload + b"\r\n"

    for i in range(PER_READ):
        asks += hmsg(ask_block % i, b'{"type":"Ping","n":%d}' % i, i)
        tells += hmsg(tell_block % i, b"x" * 128, i)
        body = b'{"stream":"BENCH_MBOX_BENCHSINK","seq":%d}' % i if i % 2 else b"%d" % i
        asker += b"MSG _INBOX.HK0D2m7I6X02rV1qghy7Hw.%d 3 %d\r\n%s\r\n" % (i, len(body), body)
    return {"worker, asks": bytes(asks), "worker, tells": bytes(tells), "asker": bytes(asker)}


async def _per_message_us(parser_type: type[Parser], data: bytes, reads: int) -> float:
    parser = parser_type(_Sink())
    started = time.perf_counter()
    for _ in range(reads):
        await parser.parse(data)
    return (time.perf_counter() - started) / (reads * PER_READ) * 1e6


async def run(reads: int) -> dict[str, Any]:
    rows = {}
    for kind, data in _reads().items():
        best = {"nats-py": float("inf"), "actormesh": float("inf")}
        for r in range(ROUNDS):
            order = [("nats-py", Parser), ("actormesh", MessageParser)]
            for name, parser_type in order if r % 2 == 0 else order[::-1]:
                us = await _per_message_us(parser_type, data, reads)
                best[name] = min(best[name], us)
        rows[kind] = {**best, "ratio": best["actormesh"] / best["nats-py"]}
        print(
            f"[parser] {kind}: nats-py {best['nats-py']:.2f} us/msg, "
            f"MessageParser {best['actormesh']:.2f} us/msg ({rows[kind]['ratio']:.2f}x)",
            file=sys.stderr,
            flush=True,
        )
    lines = [
        f"Reading the connection: µs per message, best of {ROUNDS} rounds of "
        f"{reads:,} reads of {PER_READ} messages, no broker.",
        "",
        "| read | nats-py `Parser` | actormesh `MessageParser` | ratio |",
        "|---|--:|--:|--:|",
    ]
    for kind, row in rows.items():
        lines.append(
            f"| {kind} | {row['nats-py']:.2f} | {row['actormesh']:.2f} | {row['ratio']:.2f}x |"
        )
    return {"name": "parser", "per_read": PER_READ, "rows": rows, "markdown": "\n".join(lines)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="bench.bench_parser", description=__doc__)
    p.add_argument("--quick", action="store_true", help="200 reads per round")
    args = p.parse_args(argv)
    result = asyncio.run(run(200 if args.quick else 2000))
    print(result["markdown"])
    return result


if __name__ == "__main__":
    main()
