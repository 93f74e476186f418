"""A local stand-in for a Confluent schema registry, for proving what the daemon does when one fails.

The real registry (a Java service) is out of reach here; what the decoder uses of it is one
endpoint, ``GET /schemas/ids/{id}`` answering ``{"schema": "<JSON text>"}`` (Confluent's
documented REST API), which this serves from a dict. ``down()`` makes it answer 503 (what a
registry behind a load balancer answers while it restarts) and ``up()`` brings it back, so
tests can take the registry away under a running daemon; ``behaviour`` makes it drip its
answer a byte at a time or send 400 MB.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LocalSchemaRegistry:
    """``with LocalSchemaRegistry({7: schema}) as registry: registry.url`` serves those schemas on loopback."""

    def __init__(self, schemas: dict[int, Any]) -> None:
        self.schemas = dict(schemas)
        self.available = True
        self.behaviour = "normal"  # or "drip" (one byte of the answer every drip_s) or "huge" (a 400 MB answer)
        self.drip_s = 0.5
        self.requests = 0
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                registry.requests += 1
                parts = self.path.strip("/").split("/")
                if registry.behaviour != "normal":
                    self._misbehave()
                elif not registry.available:
                    self._answer(503, {"error_code": 50301, "message": "registry restarting"})
                elif len(parts) == 3 and parts[:2] == ["schemas", "ids"] and parts[2].isdigit() and int(parts[2]) in registry.schemas:
                    self._answer(200, {"schema": json.dumps(registry.schemas[int(parts[2])])})
                else:
                    self._answer(404, {"error_code": 40403, "message": "Schema not found"})

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _misbehave(self) -> None:
                size = 400 * 1024 * 1024 if registry.behaviour == "huge" else 1000
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                try:
                    if registry.behaviour == "huge":
                        block = b" " * (1 << 20)
                        for _ in range(size >> 20):
                            self.wfile.write(block)
                    else:
                        for _ in range(size):
                            self.wfile.write(b" ")
                            self.wfile.flush()
                            time.sleep(registry.drip_s)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as it should

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="schema-registry", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def down(self) -> None:
        self.available = False

    def up(self) -> None:
        self.available = True

    def __enter__(self) -> LocalSchemaRegistry:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
