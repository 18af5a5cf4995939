"""The reference Data agent: `{"intent": Intent}` in, the rows answering it out.

Answers `{"columns": [...], "rows": [{column: value}, ...], "row_count": n,
"sql": "...", "params": [...]}` from the bundled SQLite dataset, opened read-only.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from agents.reference.contract import JSONObject
from agents.reference.dataset import DEFAULT_PATH, TABLE, connect_readonly
from agents.reference.query import Query, build_query
from agents.reference.validation import validate_intent


class DataAgent:
    """Runs an intent on the sales table at `db_path` (the bundled file by default)."""

    name = "data"

    def __init__(self, db_path: Path = DEFAULT_PATH) -> None:
        self.db_path = db_path

    async def process(self, payload: JSONObject) -> JSONObject:
        query = build_query(validate_intent(payload.get("intent")))
        # sqlite3 blocks; a thread keeps the event loop answering other requests.
        rows = await asyncio.to_thread(self._fetch, query)
        return {
            "columns": list(query.columns),
            "rows": rows,
            "row_count": len(rows),
            "sql": query.sql,
            "params": list(query.params),
        }

    def _fetch(self, query: Query) -> list[JSONObject]:
        # One connection per query: sqlite3 connections belong to the thread that opened them.
        conn = connect_readonly(self.db_path)
        try:
            cursor = conn.execute(query.sql, query.params)
            return [dict(zip(query.columns, row, strict=True)) for row in cursor]
        finally:
            conn.close()

    def _probe(self) -> bool:
        try:
            conn = connect_readonly(self.db_path)
        except (OSError, sqlite3.Error):
            return False
        try:
            conn.execute(f'SELECT 1 FROM "{TABLE}" LIMIT 1').fetchall()
        except sqlite3.Error:
            return False
        finally:
            conn.close()
        return True

    async def healthy(self) -> bool:
        return await asyncio.to_thread(self._probe)
