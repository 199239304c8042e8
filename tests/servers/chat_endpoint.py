"""A minimal /v1/chat/completions server on 127.0.0.1 for tests; subclasses decide the replies."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def completion(model: str, content: str, prompt_tokens: int, completion_tokens: int) -> dict:
    """An OpenAI chat.completion body with one assistant message."""
    return {"id": "t", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # socketserver's 5 drops connections when many clients connect at once


class ChatEndpoint:
    """Serves on a free port until `close()`; `reply(body, handler)` answers each POST. With
    `keep_alive`, connections stay open between requests (HTTP/1.1), as real servers keep them."""

    def __init__(self, keep_alive: bool = False):
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"
            # Headers and body go out in two writes: on a kept-alive connection Nagle's algorithm holds
            # the body until the client's delayed ACK of the headers, about 40 ms a response.
            disable_nagle_algorithm = keep_alive

            def log_message(self, *args):
                pass

            def do_POST(self):
                endpoint.post(self)

            def do_GET(self):
                endpoint.get(self)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def post(self, handler: BaseHTTPRequestHandler) -> None:
        self.reply(json.loads(handler.rfile.read(int(handler.headers["Content-Length"]))), handler)

    def get(self, handler: BaseHTTPRequestHandler) -> None:
        self.send(handler, 404, {"error": {"message": f"no GET {handler.path}"}})

    def reply(self, body: dict, handler: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    @staticmethod
    def send(handler: BaseHTTPRequestHandler, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
