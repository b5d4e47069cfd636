"""pg2neo: keep a Neo4j graph continuously and verifiably in sync with PostgreSQL."""

__version__ = "0.1.0"
