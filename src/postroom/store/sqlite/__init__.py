"""The embedded SQLite engine: one writer thread with group commit, WAL, readers apart."""

from postroom.store.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
