"""A worker that crashes at start while its crash budget lasts.

`python -m tests.integration.supervisor.tree_flaky <actormesh args...>`: reads the
number in the file $CRASH_BUDGET; above 0 it takes one off and exits 1 at once
(a crash the supervisor sees); at 0 it becomes `python -m actormesh <args...>`.
A test sets the budget to make a group exhaust its intensity, and to let it recover.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    budget = Path(os.environ["CRASH_BUDGET"])
    try:
        left = int(budget.read_text().strip() or "0")
    except FileNotFoundError:
        left = 0
    if left > 0:
        budget.write_text(str(left - 1))
        sys.exit(1)
    # Become the worker (same pid: the supervisor watches this process).
    os.execv(sys.executable, [sys.executable, "-m", "actormesh", *sys.argv[1:]])  # noqa: S606


if __name__ == "__main__":
    main()
