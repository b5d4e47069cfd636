"""Crash-test helper: commits one strict transaction and SIGKILLs itself at the step named on the command line.

Place in the data flow: a stand-in for an application process that dies in the middle of a strict commit
(tests/integration/test_strict.py runs it as a subprocess). Argument: one JSON object with pg_dsn, neo4j_uri,
neo4j_user, neo4j_password, mapping (path), stop (a step of pg2neo.coordinate.strict.STEPS or "never"),
person_id and name (the write: UPDATE person SET name).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import psycopg
from neo4j import GraphDatabase

from pg2neo.coordinate import StrictCoordinator
from pg2neo.mapping.resolve import load_mapping


def main() -> None:
    args = json.loads(sys.argv[1])
    stop = str(args["stop"])

    def on_step(step: str) -> None:
        if step == stop:
            os.kill(os.getpid(), signal.SIGKILL)

    with (
        psycopg.connect(args["pg_dsn"]) as conn,
        GraphDatabase.driver(args["neo4j_uri"], auth=(args["neo4j_user"], args["neo4j_password"])) as driver,
    ):
        mapping = load_mapping(Path(args["mapping"]), conn)
        conn.commit()
        coordinator = StrictCoordinator(driver, mapping, on_step=on_step)
        with coordinator.transaction(conn) as tx:
            tx.execute("UPDATE person SET name = %s WHERE id = %s", (args["name"], args["person_id"]))


if __name__ == "__main__":
    main()
