"""`python tests/fault_run.py <pg2neo arguments>`: the `pg2neo` command with a fault point armed, for fault tests.

`PG2NEO_TEST_KILL_AFTER_COMMIT=p` (0 to 1): after each batch's Neo4j commit and before its queue acknowledgement
(`Engine.after_neo4j_commit`), the process SIGKILLs itself with probability p: a batch written to the graph but still
queued, which the next `pg2neo run` must apply again without harm. Production code carries no fault knob; the seam
is replaced here, in the test's own process.
"""

from __future__ import annotations

import os
import random
import signal
import sys

from pg2neo.apply.engine import Engine
from pg2neo.cli.main import run

KILL_AFTER_COMMIT = "PG2NEO_TEST_KILL_AFTER_COMMIT"
# Written to stderr just before the kill, so that a test can tell this kill from any other death.
KILLED_AFTER_COMMIT = "fault_run: SIGKILL between the Neo4j commit and the queue ack"


def arm_kill_after_commit(probability: float) -> None:
    """Make `Engine.after_neo4j_commit` SIGKILL this process with `probability`."""

    def after_neo4j_commit(engine: Engine) -> None:
        if random.random() < probability:
            os.write(sys.stderr.fileno(), f"{KILLED_AFTER_COMMIT}\n".encode())
            os.kill(os.getpid(), signal.SIGKILL)

    Engine.after_neo4j_commit = after_neo4j_commit  # type: ignore[method-assign]


def main() -> None:
    probability = float(os.environ.get(KILL_AFTER_COMMIT, "0"))
    if not 0.0 <= probability <= 1.0:
        raise SystemExit(f"{KILL_AFTER_COMMIT} must be a probability from 0 to 1, not {probability}")
    if probability:
        arm_kill_after_commit(probability)
    sys.argv[0] = "pg2neo"
    run()


if __name__ == "__main__":
    main()
