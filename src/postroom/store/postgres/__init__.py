"""The PostgreSQL engine: many nodes on one database."""

from postroom.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
