"""A local OpenAI-compatible server with the Batch API: POST /v1/files, POST /v1/batches,
GET /v1/batches (list), GET /v1/batches/{id}, GET /v1/files/{id}/content, and live
/v1/chat/completions; subclasses decide each reply with `complete(body)`.

A batch stays in_progress for `delay_s` seconds after it is created, then runs every row through
`complete` at the first poll after that. `expire_keep=N` makes it end "expired" with only its first
N rows answered (the rest in the error file, as OpenAI does); `fail_row(body)` True gives a row a 500
in the error file; `fail_batch=True` ends it "failed" with no output; `lose_create_reply=True`
creates the batch but resets the connection instead of answering. Everything the server was sent
is kept: `live` (chat completion bodies), `created` (batch id -> the custom_ids it ran), `log`."""

from __future__ import annotations

import json
import socket
import threading
import time
from email.parser import BytesParser
from email.policy import default

from servers.chat_endpoint import ChatEndpoint, completion


class BatchEndpoint(ChatEndpoint):
    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.expire_keep: int | None = None
        self.fail_batch = False
        self.lose_create_reply = False
        self.live: list[dict] = []
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.created: dict[str, list[str]] = {}
        self.bodies: dict[str, dict] = {}  # custom_id -> the body it was sent with
        self.polls: dict[str, int] = {}
        self.log: list[tuple[str, str]] = []
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()
        super().__init__()

    # ---- what subclasses decide -------------------------------------------------------------
    def complete(self, body: dict) -> tuple[int, dict]:
        """(HTTP status, JSON payload) for one chat completion request, live or in a batch."""
        raise NotImplementedError

    def fail_row(self, body: dict) -> bool:
        return False

    # ---- live calls ---------------------------------------------------------------------------
    def reply(self, body, handler):
        with self._lock:
            self.live.append(body)
        self.send(handler, *self.complete(body))

    # ---- the Batch API ------------------------------------------------------------------------
    def post(self, handler):
        path = handler.path
        self.log.append(("POST", path))
        data = handler.rfile.read(int(handler.headers["Content-Length"]))
        if path.endswith("/chat/completions"):
            return self.reply(json.loads(data), handler)
        if path.endswith("/files"):
            ctype = handler.headers["Content-Type"].encode()
            form = BytesParser(policy=default).parsebytes(b"Content-Type: " + ctype + b"\r\n\r\n" + data)
            parts = {part.get_param("name", header="content-disposition"): part for part in form.iter_parts()}
            content = parts["file"].get_payload(decode=True)
            with self._lock:
                file_id = f"file-{len(self.files) + 1}"
                self.files[file_id] = content
            return self.send(handler, 200, self._file(file_id, "batch"))
        if path.endswith("/batches"):
            body = json.loads(data)
            if body["input_file_id"] not in self.files:
                return self.send(handler, 404, {"error": {"message": "no such file"}})
            with self._lock:
                batch_id = f"batch-{len(self.batches) + 1}"
                rows = [json.loads(line) for line in self.files[body["input_file_id"]].decode().splitlines() if line]
                self.created[batch_id] = [row["custom_id"] for row in rows]
                self.bodies.update((row["custom_id"], row["body"]) for row in rows)
                self.batches[batch_id] = {
                    "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                    "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                    "status": "in_progress", "output_file_id": None, "error_file_id": None,
                    "created_at": int(time.time()), "metadata": body.get("metadata"),
                    "request_counts": {"total": len(rows), "completed": 0, "failed": 0}}
                self._started[batch_id] = time.monotonic()
            if self.lose_create_reply:  # the batch exists, but the client never hears of it
                handler.connection.shutdown(socket.SHUT_RDWR)
                return None
            return self.send(handler, 200, self.batches[batch_id])
        self.send(handler, 404, {"error": {"message": f"no POST {path}"}})

    def get(self, handler):
        path = handler.path.split("?")[0].rstrip("/")
        self.log.append(("GET", path))
        parts = path.split("/")
        if path.endswith("/batches"):
            data = list(self.batches.values())
            return self.send(handler, 200, {"object": "list", "data": data, "has_more": False,
                                            "first_id": data[0]["id"] if data else None,
                                            "last_id": data[-1]["id"] if data else None})
        if parts[-2] == "batches" and parts[-1] in self.batches:
            batch_id = parts[-1]
            with self._lock:
                self.polls[batch_id] = self.polls.get(batch_id, 0) + 1
                if self.batches[batch_id]["status"] == "in_progress" \
                        and time.monotonic() - self._started[batch_id] >= self.delay_s:
                    self._finish(batch_id)
            return self.send(handler, 200, self.batches[batch_id])
        if parts[-1] == "content" and parts[-2] in self.files:
            data = self.files[parts[-2]]
            handler.send_response(200)
            handler.send_header("Content-Type", "application/octet-stream")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return None
        self.send(handler, 404, {"error": {"message": f"no GET {path}"}})

    def _finish(self, batch_id: str) -> None:
        batch = self.batches[batch_id]
        if self.fail_batch:
            batch.update(status="failed", errors={"object": "list", "data": [
                {"code": "invalid_request", "message": "scripted batch failure", "line": 1, "param": None}]})
            return
        out, err = [], []
        for n, custom_id in enumerate(self.created[batch_id]):
            body = self.bodies[custom_id]
            if self.expire_keep is not None and n >= self.expire_keep:
                err.append({"id": f"r{n}", "custom_id": custom_id, "response": None,
                            "error": {"code": "batch_expired", "message": "This request could not be executed "
                                      "before the completion window expired."}})
            elif self.fail_row(body):
                err.append({"id": f"r{n}", "custom_id": custom_id, "error": None, "response": {
                    "status_code": 500, "request_id": f"q{n}",
                    "body": {"error": {"message": "scripted row failure", "type": "server_error"}}}})
            else:
                status, payload = self.complete(body)
                row = {"id": f"r{n}", "custom_id": custom_id, "error": None,
                       "response": {"status_code": status, "request_id": f"q{n}", "body": payload}}
                (out if status == 200 else err).append(row)
        for kind, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                file_id = f"file-{len(self.files) + 1}"
                self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                batch[kind] = file_id
        batch["status"] = "expired" if self.expire_keep is not None else "completed"
        batch["request_counts"] = {"total": len(out) + len(err), "completed": len(out), "failed": len(err)}

    def _file(self, file_id: str, purpose: str) -> dict:
        return {"id": file_id, "object": "file", "bytes": len(self.files[file_id]), "created_at": int(time.time()),
                "filename": "requests.jsonl", "purpose": purpose, "status": "processed"}

    # ---- what the tests read ------------------------------------------------------------------
    def sent_ids(self) -> list[str]:
        """Every custom_id the server ran in a batch, once per time it was sent."""
        return [cid for ids in self.created.values() for cid in ids]


def chat_reply(model: str, content: str, prompt: str) -> tuple[int, dict]:
    return 200, completion(model, content, max(1, len(prompt) // 4), max(1, len(content) // 4))
