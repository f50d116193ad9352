"""The worker runtime: one process serving one actor type from its mailbox.

fetch (continuous pull, bounded) → per-key lane → decode → interceptors →
handler → reply / ack; failures nak with backoff, then dead-letter after
`max_deliver`. One module per stage; `Worker` (in `_facade`) ties them together.
"""

from ._facade import Worker, WorkerStatus
from ._failures import EXIT_ESCALATED

__all__ = ["EXIT_ESCALATED", "Worker", "WorkerStatus"]
