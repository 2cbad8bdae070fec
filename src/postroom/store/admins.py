"""The dashboard's administrators and their audit log, in SQL both engines run as it is.

The statements are written once with ``%s`` placeholders; SQLite gets them with ``?``
(``Dialect``). Every function takes a DB-API connection whose ``execute`` returns a
cursor, which ``sqlite3`` and ``psycopg`` connections both are.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from postroom.store.models import AdminAction, AdminRecord

__all__ = ["POSTGRES", "SQLITE", "AdminOps", "Dialect"]

R = TypeVar("R")

_ADMIN_COLUMNS = "name, password_hash, created_at, sessions_after"
_ACTION_COLUMNS = "at, admin, action, target, client"


class _Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class _Conn(Protocol):
    def execute(self, sql: Any, params: Any = ..., /) -> _Cursor: ...


def _admin(row: Any) -> AdminRecord:
    return AdminRecord(str(row[0]), str(row[1]), float(row[2]), float(row[3]))


@dataclass(frozen=True, slots=True)
class Dialect:
    mark: str  # the engine's placeholder

    def _sql(self, sql: str) -> str:
        return sql.replace("%s", self.mark)

    def _changed(self, conn: _Conn, sql: str, params: tuple[Any, ...]) -> bool:
        return conn.execute(self._sql(sql), params).rowcount > 0

    def add_admin(self, record: AdminRecord, conn: _Conn) -> bool:
        sql = (
            f"INSERT INTO admins ({_ADMIN_COLUMNS}) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING"
        )
        params = (record.name, record.password_hash, record.created_at, record.sessions_after)
        return self._changed(conn, sql, params)

    def admin(self, name: str, conn: _Conn) -> AdminRecord | None:
        sql = f"SELECT {_ADMIN_COLUMNS} FROM admins WHERE name = %s"
        row = conn.execute(self._sql(sql), (name,)).fetchone()
        return None if row is None else _admin(row)

    def admins(self, conn: _Conn) -> list[AdminRecord]:
        sql = f"SELECT {_ADMIN_COLUMNS} FROM admins ORDER BY name"
        return [_admin(row) for row in conn.execute(sql, ()).fetchall()]

    def remove_admin(self, name: str, conn: _Conn) -> bool:
        return self._changed(conn, "DELETE FROM admins WHERE name = %s", (name,))

    def set_password(self, name: str, password_hash: str, conn: _Conn) -> bool:
        sql = "UPDATE admins SET password_hash = %s WHERE name = %s"
        return self._changed(conn, sql, (password_hash, name))

    def end_sessions(self, name: str, at: float, conn: _Conn) -> bool:
        # The CASE keeps sessions_after from moving back; the row counts as found either way.
        sql = (
            "UPDATE admins SET sessions_after = CASE WHEN sessions_after < %s THEN %s"
            " ELSE sessions_after END WHERE name = %s"
        )
        return self._changed(conn, sql, (at, at, name))

    def record_action(self, action: AdminAction, conn: _Conn) -> None:
        sql = f"INSERT INTO admin_actions ({_ACTION_COLUMNS}) VALUES (%s, %s, %s, %s, %s)"
        params = (action.at, action.admin, action.action, action.target, action.client)
        conn.execute(self._sql(sql), params)

    def actions(self, limit: int, before: float | None, conn: _Conn) -> list[AdminAction]:
        where, params = ("WHERE at < %s", (before,)) if before is not None else ("", ())
        sql = f"SELECT {_ACTION_COLUMNS} FROM admin_actions {where} ORDER BY at DESC LIMIT %s"
        rows = conn.execute(self._sql(sql), (*params, limit)).fetchall()
        return [AdminAction(float(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


SQLITE = Dialect("?")
POSTGRES = Dialect("%s")


class AdminOps:
    """The ``AdminStore`` methods, once for every engine: an engine's store mixes this
    in, names its ``Dialect`` in ``_admin_sql`` and provides ``_write`` and
    ``_read_consistent`` (as for ``DeliveryOps``)."""

    _admin_sql: Dialect

    async def _write(self, job: Callable[[Any], R], weight: int = 0) -> R:
        raise NotImplementedError

    async def _read_consistent(self, fn: Callable[[Any], R]) -> R:
        raise NotImplementedError

    async def add_admin(self, record: AdminRecord) -> bool:
        return await self._write(functools.partial(self._admin_sql.add_admin, record))

    async def admin(self, name: str) -> AdminRecord | None:
        return await self._read_consistent(functools.partial(self._admin_sql.admin, name))

    async def admins(self) -> list[AdminRecord]:
        return await self._read_consistent(self._admin_sql.admins)

    async def remove_admin(self, name: str) -> bool:
        return await self._write(functools.partial(self._admin_sql.remove_admin, name))

    async def set_admin_password(self, name: str, password_hash: str) -> bool:
        sql = self._admin_sql
        return await self._write(functools.partial(sql.set_password, name, password_hash))

    async def end_admin_sessions(self, name: str, at: float) -> bool:
        return await self._write(functools.partial(self._admin_sql.end_sessions, name, at))

    async def record_admin_action(self, action: AdminAction) -> None:
        await self._write(functools.partial(self._admin_sql.record_action, action))

    async def admin_actions(self, *, limit: int, before: float | None = None) -> list[AdminAction]:
        if limit <= 0:
            return []
        return await self._read_consistent(
            functools.partial(self._admin_sql.actions, limit, before)
        )
