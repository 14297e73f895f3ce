"""The one HTTP client of the ranking API: what the ``ranker ab`` commands, the shopper harness, the tests that
start real servers and the benchmarks use (``bench/serve.py``'s load generator keeps its own keep-alive
connections), and the free-port helper for the servers they start. Standard library only.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback TCP port nobody listens on now, for a server a test or a benchmark starts."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ApiError(RuntimeError):
    """The service answered with an error (its JSON message), or could not be reached."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


class ApiClient:
    """JSON over HTTP to a ranking service; errors raise :class:`ApiError` with the service's message."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout_s: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s

    def _request(self, method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str] | None) -> urllib.request.Request:
        # a state-changing request says it is JSON even without a body: the service refuses a bodyless POST that a web
        # page could forge (api.security)
        sent = {"Content-Type": "application/json"} if body is not None or method in ("POST", "PUT", "PATCH", "DELETE") else {}
        if self.api_key:
            sent["X-API-Key"] = self.api_key
        sent.update(headers or {})
        data = json.dumps(body).encode() if body is not None else None
        return urllib.request.Request(self.base_url + path, data=data, method=method, headers=sent)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The JSON answer; an error answer raises :class:`ApiError` with the service's message."""
        request = self._request(method, path, body, None)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = exc.reason
            raise ApiError(exc.code, str(message)) from None
        except urllib.error.URLError as exc:
            raise ApiError(0, f"{self.base_url} cannot be reached: {exc.reason}") from None
        except TimeoutError:
            raise ApiError(0, f"{self.base_url} did not answer {method} {path} within {self.timeout_s:g} s") from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, body if body is not None else {})

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PUT", path, body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """The status and the answer, errors included (JSON decoded; any other body as ``{"text": ...}``)."""
        request = self._request(method, path, body, headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.status, _decoded(response.read(), response.headers.get_content_type())
        except urllib.error.HTTPError as exc:
            return exc.code, _decoded(exc.read(), exc.headers.get_content_type())

    def text(self, path: str) -> str:
        """A plain-text answer (``/metrics``)."""
        with urllib.request.urlopen(self._request("GET", path, None, None), timeout=self.timeout_s) as response:
            return response.read().decode()

    def ready(self) -> bool:
        try:
            return self.call("GET", "/readyz")[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout_s: float = 180, process: subprocess.Popen | None = None, poll_s: float = 0.3) -> None:
        """Until ``/readyz`` answers 200; raises :class:`ApiError` if ``process`` exits first or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise ApiError(0, f"{self.base_url}: the server exited with {process.returncode}")
            if self.ready():
                return
            time.sleep(poll_s)
        raise ApiError(0, f"{self.base_url}: not ready after {timeout_s:g} s")


def _decoded(raw: bytes, content_type: str) -> Any:
    if content_type == "application/json" and raw:
        return json.loads(raw)
    return {"text": raw.decode(errors="replace")}
