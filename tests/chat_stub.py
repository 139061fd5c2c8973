"""A tiny OpenAI-compatible chat-completions server on 127.0.0.1 for tests: real HTTP, canned replies.

Explanation requests are answered ``[EXPLANATION]: tokens like <first marked token>``; judging requests with a
list marking 1 for every example that contains ``judge_word``. ``fail_next`` 5xx replies come first; a wrong key
gets 401; ``mode`` "not-json" / "null-content" sends replies that are not text; ``break_after`` successful
explanation replies, the server answers 400 (a run that dies half-way).
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY = "sk-test-good"


class ChatStub:
    def __init__(self, judge_word: str = "bridge", delay: float = 0.0):
        self.judge_word, self.delay = judge_word, delay
        self.fail_next, self.mode, self.break_after = 0, "ok", None
        self.requests, self.explained, self.in_flight, self.max_in_flight = 0, 0, 0, 0
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.requests += 1
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    time.sleep(stub.delay)
                    self._answer(body)
                finally:
                    with stub.lock:
                        stub.in_flight -= 1

            def _send(self, status: int, payload, content_type="application/json"):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _answer(self, body):
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    return self._send(
                        401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}
                    )
                with stub.lock:
                    if stub.fail_next > 0:
                        stub.fail_next -= 1
                        return self._send(500, {"error": {"message": "the server had an error"}})
                if stub.mode == "not-json":
                    return self._send(200, b"<html>gateway says hello</html>", "text/html")
                if stub.mode == "null-content":
                    return self._send(
                        200,
                        {
                            "id": "x",
                            "object": "chat.completion",
                            "model": body["model"],
                            "choices": [
                                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": None}}
                            ],
                        },
                    )
                user = body["messages"][-1]["content"]
                if user.startswith("Feature description:"):
                    examples = re.findall(r"^Example \d+: (.*)$", user, re.MULTILINE)
                    content = json.dumps([int(stub.judge_word in e.lower()) for e in examples])
                else:
                    with stub.lock:
                        if stub.break_after is not None and stub.explained >= stub.break_after:
                            return self._send(400, {"error": {"message": "context length exceeded"}})
                        stub.explained += 1
                    marked = re.search(r"<<(.*?)>>", user)
                    content = f"Let me think.\n[EXPLANATION]: tokens like {marked.group(1).strip() if marked else '?'}"
                self._send(
                    200,
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
