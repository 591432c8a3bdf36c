"""Poison records: every malformed or undeliverable message, with its raw body and reason."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg_pool import ConnectionPool

from repositories.db import Connection
from repositories.errors import parse_row, translated
from schemas.exceptions import NotFound
from schemas.ids import JobId, TaskId
from schemas.records import PoisonRecord


class PoisonRepository:
    def __init__(self, pool: ConnectionPool[Connection]) -> None:
        self._pool = pool

    def record(
        self,
        queue_name: str,
        message_id: str,
        body: str,
        dequeue_count: int,
        reason: str,
        job_id: JobId | None = None,
        task_ids: Sequence[TaskId] = (),
    ) -> bool:
        """Record a poison message once; return False when it was recorded already."""
        with translated("record poison", message_id=message_id), self._pool.connection() as conn:
            cur = conn.execute(
                "INSERT INTO poison_messages"
                " (queue_name, message_id, body, dequeue_count, reason, job_id, task_ids)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (queue_name, message_id) DO NOTHING",
                (queue_name, message_id, body, dequeue_count, reason, job_id, list(task_ids)),
            )
            return cur.rowcount == 1

    def recent(self, limit: int = 100) -> list[PoisonRecord]:
        """Return the newest poison records first."""
        with translated("list poison"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT * FROM poison_messages ORDER BY received_at DESC, poison_id DESC LIMIT %s",
                (limit,),
            ).fetchall()
        return [parse_row(PoisonRecord, row) for row in rows]

    def get(self, poison_id: int) -> PoisonRecord:
        """Return one poison record, or raise NotFound."""
        with translated("get poison", poison_id=poison_id), self._pool.connection() as conn:
            row = conn.execute(
                "SELECT * FROM poison_messages WHERE poison_id = %s", (poison_id,)
            ).fetchone()
        if row is None:
            raise NotFound("poison record not found", poison_id=poison_id)
        return parse_row(PoisonRecord, row)

    def mark_replayed(self, poison_id: int) -> None:
        """Record that the message was sent again."""
        with translated("replay poison", poison_id=poison_id), self._pool.connection() as conn:
            conn.execute(
                "UPDATE poison_messages SET replayed_at = now() WHERE poison_id = %s", (poison_id,)
            )
