"""Poison records: every malformed or undeliverable message, with its raw body and reason."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from psycopg_pool import ConnectionPool

from repositories.db import Connection
from repositories.errors import parse_row, translated
from schemas.exceptions import NotFound
from schemas.ids import JobId, TaskId
from schemas.records import PoisonRecord, Replay


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
            row = conn.execute(
                "SELECT record_poison(%s, %s, %s, %s, %s, %s, %s) AS recorded",
                (queue_name, message_id, body, dequeue_count, reason, job_id, list(task_ids)),
            ).fetchone()
        return bool(row and row["recorded"])

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

    def claim_replay(self, poison_id: int, force: bool = False) -> Replay:
        """Take the one replay of a record (any number with `force`); see Replay."""
        with translated("replay poison", poison_id=poison_id), self._pool.connection() as conn:
            row = conn.execute(
                "SELECT * FROM claim_poison_replay(%s, %s)", (poison_id, force)
            ).fetchone()
        return parse_row(Replay, row)

    def release_replay(self, poison_id: int, previous: datetime | None) -> None:
        """Undo a replay claim whose send failed."""
        with translated("release replay", poison_id=poison_id), self._pool.connection() as conn:
            conn.execute("SELECT release_poison_replay(%s, %s)", (poison_id, previous))
