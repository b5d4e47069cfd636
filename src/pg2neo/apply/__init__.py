"""Apply: changed keys or rows → `GraphBatch` → one Neo4j transaction → acknowledgement.

`core.Applier` is the one apply path (read keys, map rows, write with the version guard and the epoch, bisect a
refused batch into dead letters); `engine.Engine` drives it for queue batches and snapshot pages; `cypher` is the
graph vocabulary (reserved names and every Cypher statement); `writer.GraphWriter` runs a batch in one transaction.
"""

from __future__ import annotations

from pg2neo.apply.batch import BatchBuilder, GraphBatch, RowFailure
from pg2neo.apply.core import Applied, Applier, DeadLetter, Epoch, ReadRow
from pg2neo.apply.engine import BatchResult, Engine
from pg2neo.apply.writer import GraphWriter

__all__ = [
    "Applied",
    "Applier",
    "BatchBuilder",
    "BatchResult",
    "DeadLetter",
    "Engine",
    "Epoch",
    "GraphBatch",
    "GraphWriter",
    "ReadRow",
    "RowFailure",
]
