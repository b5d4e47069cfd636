"""The one error tree of pg2neo.

    Pg2NeoError
     ├── ConfigError          settings, the local stack, missing tools
     │    └── StackError      a local server that cannot be fetched, started or reached
     ├── MappingError         the mapping file, checked against the live catalog
     ├── CaptureError         capture objects in PostgreSQL (schema drift included)
     ├── ApplyError           writing to Neo4j
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


class ApplyError(Pg2NeoError):
    pass


class TransientApplyError(ApplyError, Transient):
    pass


class ReconcileError(Pg2NeoError):
    pass


class CoordinateError(Pg2NeoError):
    pass


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, Transient)
