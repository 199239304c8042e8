"""Response cache shared by runs: key = hash(model, messages, params, schema); every non-empty reply stored."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path


def cache_key(model: str, messages: list[dict], params: dict, schema: dict) -> str:
    payload = json.dumps({"model": model, "messages": messages, "params": params, "schema": schema}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class ResponseCache:
    """A SQLite file (default ~/.cache/pwd-agent/llm_cache.sqlite), safe to share between threads."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS response (key TEXT PRIMARY KEY, content TEXT NOT NULL, "
                           "input_tokens INTEGER, output_tokens INTEGER)")
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[str, int, int] | None:
        with self._lock:
            row = self._conn.execute("SELECT content, input_tokens, output_tokens FROM response WHERE key = ?",
                                     (key,)).fetchone()
        return tuple(row) if row else None

    def put(self, key: str, content: str, input_tokens: int, output_tokens: int) -> None:
        """Store the reply to one conversation; an empty reply (or none, on a transport error) never is."""
        if not content.strip():
            return
        with self._lock, self._conn:
            self._conn.execute("INSERT OR REPLACE INTO response VALUES (?, ?, ?, ?)",
                               (key, content, input_tokens, output_tokens))

    def close(self) -> None:
        self._conn.close()
