"""Conversations of `convrec serve`, kept in SQLite so that a restarted server goes on.

A session is one conversation with one served model. Its turns are written in one
transaction after the model answered and before the answer is sent, so a client never
sees a reply the store does not hold, and a stored history never ends in a message that
was not answered. Session ids are unguessable (`secrets.token_urlsafe`) and there is no
way to list them: whoever holds an id owns the conversation.

The database runs in WAL mode (readers do not wait for the writer) with
`synchronous=NORMAL`: a committed turn survives the server process crashing or being
killed; only a power loss can take the last commits. One connection serves all threads
under a lock; every statement is short.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from convrec.data.schema import Mention, Turn

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id         TEXT PRIMARY KEY,
    model      TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    role       TEXT NOT NULL,
    text       TEXT NOT NULL,
    items      TEXT NOT NULL,  -- JSON list of KG entity ids
    entities   TEXT NOT NULL,  -- JSON list of KG entity ids
    mentions   TEXT NOT NULL,  -- JSON list of [item, start, end]
    created_at REAL NOT NULL,
    PRIMARY KEY (session_id, position)
);
"""


@dataclass(frozen=True)
class StoredSession:
    id: str
    model: str
    created_at: float
    turns: tuple[Turn, ...]


class SessionStore:
    """Sessions and their turns in one SQLite file (see module doc)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{path}: not a usable session database ({e})") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, model: str) -> str:
        """A new, empty session with `model`; returns its id."""
        session_id = secrets.token_urlsafe(18)
        with self._lock:
            self._db.execute(
                "INSERT INTO sessions (id, model, created_at) VALUES (?, ?, ?)",
                (session_id, model, time.time()),
            )
        return session_id

    def get(self, session_id: str) -> StoredSession | None:
        """The session with its turns in order, or None when there is no such session."""
        with self._lock:
            row = self._db.execute(
                "SELECT model, created_at FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if row is None:
                return None
            rows = self._db.execute(
                "SELECT role, text, items, entities, mentions FROM turns "
                "WHERE session_id = ? ORDER BY position",
                (session_id,),
            ).fetchall()
        return StoredSession(session_id, row[0], row[1], tuple(_turn(*r) for r in rows))

    def append(self, session_id: str, turns: Sequence[Turn]) -> None:
        """Add `turns` after the session's last turn, all or none."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (start,) = self._db.execute(
                    "SELECT COUNT(*) FROM turns WHERE session_id = ?", (session_id,)
                ).fetchone()
                self._db.executemany(
                    "INSERT INTO turns VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(session_id, start + i, *_columns(turn), now) for i, turn in enumerate(turns)],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def delete(self, session_id: str) -> bool:
        """Remove the session and its turns; False when there was no such session."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        return cursor.rowcount > 0

    def count_turns(self) -> int:
        """Turns stored over all sessions (the load test checks that none was lost)."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM turns").fetchone()[0])


def _columns(turn: Turn) -> tuple[str, str, str, str, str]:
    mentions = [[m.item, m.start, m.end] for m in turn.mentions]
    return (
        turn.role,
        turn.text,
        json.dumps(list(turn.items)),
        json.dumps(list(turn.entities)),
        json.dumps(mentions),
    )


def _turn(role: str, text: str, items: str, entities: str, mentions: str) -> Turn:
    return Turn(
        role,  # type: ignore[arg-type]  # written from a Turn
        text,
        tuple(json.loads(items)),
        tuple(json.loads(entities)),
        tuple(Mention(*m) for m in json.loads(mentions)),
    )
