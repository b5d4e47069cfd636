"""The one error tree of pg2neo.

    Pg2NeoError
     ├── ConfigError          settings, the local stack, missing tools
     │    └── StackError      a local server that cannot be fetched, started or reached
     ├── MappingError         the mapping file, checked against the live catalog
     ├── CaptureError         capture objects in PostgreSQL (schema drift included)
     ├── EpochBehind          a write stamped with an epoch older than the graph's
     ├── CheckpointFenced     another worker moved a source position this one was about to store
     ├── ReconcileError       verify and repair
     └── CoordinateError      strict mode (two-phase commit)

`Transient` is a marker mixed into errors that are worth retrying; only the retry loop reads it.
"""

from __future__ import annotations


class Pg2NeoError(Exception):
    """Base of every error pg2neo raises on purpose; its message says what is wrong and how to fix it."""


class Transient:
    """Marker: the operation may succeed if retried later (server down, connection lost, deadlock)."""


class ConfigError(Pg2NeoError):
    pass


class StackError(ConfigError):
    pass


class MappingError(Pg2NeoError):
    pass


class CaptureError(Pg2NeoError):
    pass


class SchemaDriftError(CaptureError):
    """A mapped table or column changed in PostgreSQL after `pg2neo init`."""


class ReconcileError(Pg2NeoError):
    pass


class CoordinateError(Pg2NeoError):
    pass


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, Transient)


class EpochBehind(Pg2NeoError):
    """The graph has seen a newer epoch than the one this write was stamped with.

    Epochs come from a PostgreSQL sequence; after `uninstall` + `init`, a restore from backup, a sequence reset or a
    second database feeding the same graph, the sequence can be behind the graph, and the version guard would refuse
    every newer write. The writer raises this (its Neo4j transaction rolled back) so that the caller moves its
    sequence past `high` and writes again with a newer epoch."""

    def __init__(self, epoch: int, high: int) -> None:
        super().__init__(f"epoch {epoch} is behind the graph's highest epoch {high}")
        self.epoch = epoch
        self.high = high


class CheckpointFenced(Pg2NeoError):
    """Another worker stored this source position first (a Kafka partition reassigned while this worker wrote):
    nothing of this write is committed, and the worker re-reads its position before going on."""

    def __init__(self, name: str, expected: int | None) -> None:
        super().__init__(
            f"the checkpoint {name!r} no longer holds {expected!r}: another worker applied these events; "
            "this worker's write was rolled back"
        )
        self.name = name
        self.expected = expected
