"""The OpenAI Batch API for the bulk stages: requests gathered from the unit threads into one batch
file, the batch stored in the run's store before anything waits on it, polled until it ends.

A unit thread calls `Batcher.submit(custom_id, body)` (custom_id = the conversation's response-cache
key) and blocks on the future. The collector thread sends what arrived once no request came for
`llm.batch_window_s` (or `llm.batch_size` are waiting): it uploads the JSONL file, stores an
LLMBatch row with the file and the custom_ids, creates the batch, stores its id, then polls. When the
batch ends, every reply goes into the response cache first, then the row gets the final status, then
the futures resolve: a reply, or BatchRowFailed (a failed row, or one an expired or failed batch left
unanswered), which the client answers with a live call.

Resume: a request whose custom_id is in a stored batch of this run is never sent again: that batch
is polled instead (a row left "submitting" by a kill between create and store is found on the
server by its input file, or created then from the same file).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import timezone

from sqlmodel import select

from pwd_agent.errors import PwdAgentError
from pwd_agent.store import LLMBatch, session_scope
from pwd_agent.store.models import utcnow

log = logging.getLogger("pwd_agent.batch")
ENDPOINT = "/v1/chat/completions"
FINAL = ("completed", "failed", "expired", "cancelled")
_BATCHERS: weakref.WeakSet = weakref.WeakSet()


@dataclass
class BatchReply:
    content: str
    input_tokens: int
    output_tokens: int
    shared: bool = False  # the same conversation asked by another unit too: one request, priced once


class BatchRowFailed(Exception):
    """The batch gave no usable reply for this request: it goes live instead (the reason is ledgered)."""


class BatchAbandoned(PwdAgentError):
    """The run stops while requests wait on a batch; the batch stays stored and `resume` polls it."""


def abandon_all() -> None:
    """Release every thread waiting on a batch (the run is stopping: Ctrl-C, an error in the stage)."""
    for batcher in list(_BATCHERS):
        batcher.abandon()


class Batcher:
    """One per client: collects the unit threads' first requests into batches and resolves them."""

    def __init__(self, client, cfg, cache, db_url: str):
        self.client, self.cfg, self.cache, self.db_url = client, cfg, cache, db_url
        self._cond = threading.Condition()
        self._waiting: dict[str, list[Future]] = {}  # custom_id -> futures, sent or pending
        self._pending: dict[str, dict] = {}  # custom_id -> request body, not sent yet
        self._last = 0.0
        self._stored: dict[str, int] | None = None  # custom_id -> LLMBatch.id of the run's stored batches
        self._watched: set[int] = set()
        self._collector: threading.Thread | None = None
        _BATCHERS.add(self)

    # ---- unit threads -------------------------------------------------------------------
    def submit(self, custom_id: str, body: dict) -> Future:
        future: Future = Future()
        with self._cond:
            if custom_id in self._waiting:  # the same conversation is already on its way
                self._waiting[custom_id].append(future)
                return future
            self._waiting[custom_id] = [future]
            row_id = self._stored_rows().get(custom_id)
            if row_id is not None:  # sent by an earlier process: poll that batch, never send it twice
                if row_id not in self._watched:
                    self._watched.add(row_id)
                    self._thread(self._resume, row_id)
                return future
            self._pending[custom_id] = body
            self._last = time.monotonic()
            if self._collector is None:
                self._collector = self._thread(self._collect)
            self._cond.notify_all()
        return future

    def abandon(self) -> None:
        with self._cond:
            waiting, self._waiting, self._pending = self._waiting, {}, {}
        for futures in waiting.values():
            for future in futures:
                if not future.done():
                    future.set_exception(BatchAbandoned("the run stopped while a batch was pending",
                                                        "pwd-agent resume RUN polls the same batch"))

    # ---- the collector: pending requests -> one batch ------------------------------------
    def _collect(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._pending:
                        quiet = time.monotonic() - self._last
                        if quiet >= self.cfg.batch_window_s or len(self._pending) >= self.cfg.batch_size:
                            break
                        self._cond.wait(self.cfg.batch_window_s - quiet)
                    elif not self._cond.wait(timeout=30) and not self._pending:
                        self._collector = None  # idle: the next submit starts another
                        return
                ids = list(self._pending)[: self.cfg.batch_size]
                bodies = {cid: self._pending.pop(cid) for cid in ids}
            self._thread(self._send, bodies)

    def _send(self, bodies: dict[str, dict]) -> None:
        ids = list(bodies)
        row = None
        try:
            lines = "".join(json.dumps({"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": body}) + "\n"
                            for cid, body in bodies.items())
            upload = self._retry(self.client.files.create, file=("requests.jsonl", lines.encode()), purpose="batch")
            with session_scope(self.db_url) as session:  # stored before the batch exists on the server
                row = LLMBatch(input_file_id=upload.id, custom_ids=ids)
                session.add(row)
            try:
                self._create(row)
            except Exception:
                # A timeout or reset may hide a batch the server did create: look before going live.
                if (found := self._created_from(row)) is None:
                    raise
                self._update(row, batch_id=found.id, status="submitted")
        except Exception as exc:  # noqa: BLE001 - any failure to send: these requests go live
            if row is not None and row.batch_id is None:
                self._update(row, status="unsent")
            log.warning("batch not sent (%s: %s); its %d requests go live", type(exc).__name__, exc, len(ids))
            self._resolve(ids, {}, {}, f"batch not sent ({type(exc).__name__}: {exc})")
            return
        self._poll(row)

    def _create(self, row: LLMBatch) -> None:
        batch = self.client.batches.create(input_file_id=row.input_file_id, endpoint=ENDPOINT,
                                           completion_window=self.cfg.batch_completion_window,
                                           metadata={"pwd_agent": "bulk stage"})
        self._update(row, batch_id=batch.id, status="submitted")
        log.info("batch %s sent: %d requests", batch.id, len(row.custom_ids))

    # ---- resume: a stored batch of an earlier process ----------------------------------
    def _stored_rows(self) -> dict[str, int]:
        if self._stored is None:
            self._stored = {}
            with session_scope(self.db_url) as session:
                for row in session.exec(select(LLMBatch).where(LLMBatch.status != "unsent")
                                        .order_by(LLMBatch.id)).all():
                    self._stored.update(dict.fromkeys(row.custom_ids, row.id))
        return self._stored

    def _resume(self, row_id: int) -> None:
        with session_scope(self.db_url) as session:
            row = session.get(LLMBatch, row_id)
        try:
            if row.batch_id is None:  # killed between create and store: was the batch created?
                found = self._created_from(row)
                if found is not None:
                    self._update(row, batch_id=found.id, status="submitted")
                else:
                    self._create(row)
        except Exception as exc:  # noqa: BLE001
            self._resolve(row.custom_ids, {}, {}, f"stored batch not resumed ({type(exc).__name__}: {exc})")
            return
        log.info("polling batch %s of an earlier process", row.batch_id)
        self._poll(row)

    def _created_from(self, row: LLMBatch):
        """The server's batch made from this row's input file, or None; the listing (newest first on
        OpenAI) is read back to a few minutes before the row was stored, not through all history."""
        stored = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=timezone.utc)
        for batch in self.client.batches.list(limit=100):
            if batch.input_file_id == row.input_file_id:
                return batch
            if batch.created_at < stored.timestamp() - 600:
                return None
        return None

    # ---- polling and results ------------------------------------------------------------
    def _poll(self, row: LLMBatch) -> None:
        errors = 0
        while True:
            try:
                batch = self.client.batches.retrieve(row.batch_id)
                errors = 0
            except Exception as exc:  # noqa: BLE001 - transient: poll again, give up after max_retries
                errors += 1
                if errors > self.cfg.max_retries:
                    self._resolve(row.custom_ids, {}, {}, f"batch {row.batch_id} unreachable ({exc})")
                    return
                time.sleep(self.cfg.batch_poll_s)
                continue
            if batch.status in FINAL:
                break
            time.sleep(self.cfg.batch_poll_s)
        try:
            replies, failures = self._read(batch.output_file_id), self._read(batch.error_file_id)
        except Exception as exc:  # noqa: BLE001
            replies, failures = {}, {}
            log.warning("batch %s: results unreadable (%s)", row.batch_id, exc)
        answered = {}
        for cid, result in replies.items():
            reply = _reply(result)
            if isinstance(reply, BatchReply):
                answered[cid] = reply
            else:
                failures[cid] = result
        if self.cache is not None and self.cfg.cache:
            for cid, reply in answered.items():  # cached before the row is final: a kill loses nothing
                self.cache.put(cid, reply.content, reply.input_tokens, reply.output_tokens)
        failed = [cid for cid in row.custom_ids if cid not in answered]
        self._update(row, status=batch.status, n_failed=len(failed), finished_at=utcnow())
        log.info("batch %s %s: %d answered, %d to send live", row.batch_id, batch.status, len(answered), len(failed))
        reasons = {cid: _why(failures.get(cid), batch) for cid in failed}
        self._resolve(row.custom_ids, answered, reasons, "")

    def _read(self, file_id: str | None) -> dict[str, dict]:
        if not file_id:
            return {}
        text = self._retry(self.client.files.content, file_id).text
        rows = (json.loads(line) for line in text.splitlines() if line.strip())
        return {row["custom_id"]: row for row in rows if "custom_id" in row}

    def _resolve(self, ids: list[str], answered: dict[str, BatchReply], reasons: dict[str, str],
                 default: str) -> None:
        with self._cond:
            if self._stored is not None:
                for cid in ids:
                    self._stored.pop(cid, None)
            futures = {cid: self._waiting.pop(cid, []) for cid in ids}
        for cid, waiting in futures.items():
            for n, future in enumerate(waiting):
                if cid in answered:
                    future.set_result(answered[cid] if n == 0 else replace(answered[cid], shared=True))
                else:
                    future.set_exception(BatchRowFailed(reasons.get(cid) or default))

    def _update(self, row: LLMBatch, **fields) -> None:
        for name, value in fields.items():
            setattr(row, name, value)
        with session_scope(self.db_url) as session:
            session.merge(row)

    def _retry(self, call, *args, **kwargs):
        """An idempotent call (upload, download), retried on transient errors like a live request."""
        import openai

        for attempt in range(self.cfg.max_retries + 1):
            try:
                return call(*args, **kwargs)
            except (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError,
                    openai.InternalServerError):
                if attempt == self.cfg.max_retries:
                    raise
                time.sleep(min(30.0, 0.5 * 2**attempt))

    @staticmethod
    def _thread(target, *args) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True, name=f"batch-{target.__name__}")
        thread.start()
        return thread


def _reply(result: dict) -> BatchReply | None:
    """A row of the output file -> the reply, or None when the row is an error."""
    response = result.get("response") or {}
    body = response.get("body") or {}
    if result.get("error") or response.get("status_code") != 200 or not body.get("choices"):
        return None
    usage = body.get("usage") or {}
    content = (body["choices"][0].get("message") or {}).get("content") or ""
    return BatchReply(content, usage.get("prompt_tokens", 0) or 0, usage.get("completion_tokens", 0) or 0)


def _why(result: dict | None, batch) -> str:
    """Why the batch did not answer a request, in one line."""
    if result is None:
        errors = getattr(getattr(batch, "errors", None), "data", None) or []
        detail = "; ".join(f"{e.code}: {e.message}" for e in errors[:2])
        return f"batch {batch.id} {batch.status} without this request" + (f" ({detail})" if detail else "")
    error = result.get("error") or {}
    response = result.get("response") or {}
    if not error and isinstance(response.get("body"), dict):
        error = response["body"].get("error") or {}
    message = error.get("message") if isinstance(error, dict) else str(error)
    status = response.get("status_code")
    return (f"batch {batch.id} row failed" + (f" (HTTP {status})" if status else "")
            + (f": {message}" if message else ""))
