"""Capture: the triggers in PostgreSQL that queue changed keys (`triggers`) and the session settings that make a
key's text the same wherever it is printed (`session`). The schema they write into belongs to `pg2neo.transport`."""
