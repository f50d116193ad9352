"""Command-line arguments shared by the baseline workers (raw nats-py, FastStream):
the same stream and consumer settings the actormesh worker uses. The defaults are
actormesh's default mailbox bounds (`MailboxConfig()`)."""

from __future__ import annotations

import argparse
from typing import Any

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType


def worker_parser(prog: str, *, durable: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--url", required=True)
    p.add_argument("--stream", required=True)
    p.add_argument("--subject", required=True)
    p.add_argument("--durable", default=durable)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--step", type=int, default=1000)
    p.add_argument("--progress", default="bench.progress")
    p.add_argument("--max-msgs", type=int, default=10_000)
    p.add_argument("--max-bytes", type=int, default=256 * 1024 * 1024)
    p.add_argument("--max-msg-size", type=int, default=1024 * 1024)
    p.add_argument("--duplicate-window", type=float, default=120.0)
    p.add_argument("--ack-wait", type=float, default=30.0)
    p.add_argument("--max-deliver", type=int, default=5)
    p.add_argument("--max-ack-pending", type=int, default=1000)
    return p


def stream_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The mailbox stream's settings, identical for every contender."""
    return {
        "name": args.stream,
        "subjects": [args.subject],
        "retention": RetentionPolicy.WORK_QUEUE,
        "discard": DiscardPolicy.NEW,
        "storage": StorageType.FILE,
        "max_msgs": args.max_msgs,
        "max_bytes": args.max_bytes,
        "max_msg_size": args.max_msg_size,
        "duplicate_window": args.duplicate_window,
        "num_replicas": 1,
    }
