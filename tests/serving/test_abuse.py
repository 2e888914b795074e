"""`ftsdk serve` under abuse: who may call it, what leaks, and requests that try to hold it.

Each test runs the real app with uvicorn on 127.0.0.1 (in this process, so a test can slow the tiny
model down or make it fail) and talks to it over real HTTP with http.client and raw sockets.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from ftsdk.cli import main  # noqa: E402
from ftsdk.plugin.errors import ConfigError  # noqa: E402
from ftsdk.serving.auth import KEY_VARIABLE, check_exposure, is_loopback, resolve_api_key  # noqa: E402
from ftsdk.serving.config import ServeConfig  # noqa: E402

MESSAGES = [{"role": "user", "content": "what is the color of the sky"}]


@dataclass
class Live:
    """A server running in this process: its port, and its registry (the backend and model inside)."""

    port: int
    registry: Any

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request; the status, the headers (lower-case names) and the raw body."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
            connection.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
            reply = connection.getresponse()
            return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
        finally:
            connection.close()

    def post(self, path: str, body: Any, **kwargs: Any) -> tuple[int, Any]:
        status, _, raw = self.call("POST", path, body, **kwargs)
        return status, json.loads(raw) if raw.startswith(b"{") else raw.decode()

    def chat(self, **fields: Any) -> tuple[int, Any]:
        return self.post("/v1/chat/completions", {"model": "tiny", "messages": MESSAGES, **fields})

    def queued(self) -> int:
        return json.loads(self.call("GET", "/health")[2])["queued"]

    def open_request(self, body: dict[str, Any]) -> socket.socket:
        """Send a chat request on a raw socket and return it unread (close it to disconnect)."""
        data = json.dumps(body).encode()
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
        return sock


@contextlib.contextmanager
def live(config: ServeConfig) -> Iterator[Live]:
    """``config`` served by uvicorn on a free loopback port until the block ends."""
    import uvicorn

    from ftsdk.serving.app import create_app
    from ftsdk.serving.registry import AdapterRegistry
    from ftsdk.serving.server import check_config

    registry = AdapterRegistry(check_config(config)(config), config.base_name)
    for name, path in config.adapters.items():
        registry.load(name, path)
    server = uvicorn.Server(uvicorn.Config(create_app(registry, config), log_level="warning"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        end = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < end, "the server did not start"
            time.sleep(0.02)
        yield Live(sock.getsockname()[1], registry)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def slow_down(live_server: Live, step_s: float) -> list[float]:
    """Make each forward pass of the served model take ``step_s`` longer and never end at EOS.

    Returns the list the forward passes append their start times to.
    """
    model = live_server.registry.backend.model
    model.generation_config.eos_token_id = None  # random weights would end some generations early
    original = model.forward
    steps: list[float] = []

    def forward(*args: Any, **kwargs: Any) -> Any:
        steps.append(time.monotonic())
        time.sleep(step_s)
        return original(*args, **kwargs)

    model.forward = forward
    return steps


def wait_until(condition: Callable[[], bool], within_s: float, what: str) -> float:
    """Seconds until ``condition`` held (polled); AssertionError after ``within_s``."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < within_s, f"{what} did not happen within {within_s} s"
        time.sleep(0.02)
    return time.monotonic() - start


def config(tiny_model_dir: Path, **options: Any) -> ServeConfig:
    return ServeConfig(base=str(tiny_model_dir), served_name="tiny", threads=1, max_context=256, **options)


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[Live]:
    """Default settings: admin endpoints off, no key, loopback."""
    with live(config(tiny_model_dir)) as running:
        yield running


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.serving.test_server import make_adapter

    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("abuse-adapter") / "alpha", seed=1)


# --- who may call it ----------------------------------------------------------------------------------------------


def test_admin_endpoints_are_off_unless_enabled(server: Live, tiny_model_dir: Path, adapter_dir: Path) -> None:
    status, error = server.post("/v1/adapters", {"name": "gamma", "path": str(adapter_dir)})
    assert status == 403 and error["error"]["code"] == "admin_disabled"
    assert "--enable-admin" in error["error"]["message"]
    status, _, raw = server.call("DELETE", "/v1/adapters/tiny")
    assert status == 403 and json.loads(raw)["error"]["code"] == "admin_disabled"

    with live(config(tiny_model_dir, enable_admin=True)) as admin:
        status, card = admin.post("/v1/adapters", {"name": "gamma", "path": str(adapter_dir)})
        assert status == 200 and card["id"] == "gamma" and card["parent"] == "tiny"
        assert admin.call("DELETE", "/v1/adapters/gamma")[0] == 200


def test_no_server_path_in_models_or_error_bodies(tiny_model_dir: Path, adapter_dir: Path, tmp_path: Path) -> None:
    folders = [str(tiny_model_dir), str(adapter_dir), str(tmp_path), str(Path.cwd())]
    (tmp_path / "not-an-adapter").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "adapter_config.json").write_text("{not json")
    with live(config(tiny_model_dir, adapters={"alpha": str(adapter_dir)}, enable_admin=True)) as running:
        replies = [
            running.call("GET", "/v1/models"),
            running.call("POST", "/v1/adapters", {"name": "beta", "path": str(adapter_dir)}),
            running.call("POST", "/v1/adapters", {"name": "gamma", "path": str(tmp_path / "not-an-adapter")}),
            running.call("POST", "/v1/adapters", {"name": "delta", "path": str(tmp_path / "broken")}),
            running.call("POST", "/v1/adapters", {"name": "delta", "path": str(tmp_path / "missing")}),
            running.call("POST", "/v1/chat/completions", {"model": str(adapter_dir), "messages": MESSAGES}),
            running.call("DELETE", f"/v1/adapters/{tmp_path}"),
        ]
        assert [status for status, _, _ in replies] == [200, 200, 400, 400, 400, 404, 404]
        for _, _, raw in replies:
            for folder in folders:
                assert folder not in raw.decode(), (folder, raw)
        assert {m["id"] for m in json.loads(replies[0][2])["data"]} == {"tiny", "alpha"}


def test_an_unexpected_failure_answers_a_generic_500_and_logs_the_traceback(
        server: Live, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(job: Any) -> Any:
        raise RuntimeError(f"secret detail in {tmp_path}")

    monkeypatch.setattr(server.registry.backend, "start", broken)
    with caplog.at_level(logging.ERROR, logger="ftsdk.serve"):
        for stream in (False, True):
            status, error = server.chat(max_tokens=2, stream=stream)
            assert status == 500 and error["error"]["code"] == "internal_error"
            assert "secret" not in error["error"]["message"] and "RuntimeError" not in error["error"]["message"]
            reference = error["error"]["message"].split("reference ")[1].split(")")[0]
            logged = [r for r in caplog.records if r.name == "ftsdk.serve" and reference in r.getMessage()]
            assert logged and "secret detail" in str(logged[0].exc_info[1])
    monkeypatch.undo()
    assert server.chat(max_tokens=2)[0] == 200


def test_the_api_key_is_checked_before_the_body_and_in_constant_time(tiny_model_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import ftsdk.serving.guard as guard

    compared: list[tuple[bytes, bytes]] = []
    real = guard.hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return real(given, expected)

    monkeypatch.setattr(guard.hmac, "compare_digest", spy)
    with live(config(tiny_model_dir, api_key="k3y-from-env")) as running:
        body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 2}
        assert running.call("GET", "/health")[0] == 200  # open: for load balancers' checks
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "k3y-from-env"},
                        {"Authorization": "Basic k3y-from-env"}):
            status, reply_headers, raw = running.call("POST", "/v1/chat/completions", body, headers=headers)
            assert status == 401 and json.loads(raw)["error"]["code"] == "invalid_api_key", headers
            assert reply_headers["www-authenticate"] == "Bearer"
        status, _, raw = running.call("POST", "/v1/chat/completions", b"{not json", headers={})
        assert status == 401  # refused before the body is parsed
        assert running.call("GET", "/v1/models")[0] == 401
        good = {"Authorization": "Bearer k3y-from-env"}
        assert running.call("POST", "/v1/chat/completions", body, headers=good)[0] == 200
        assert running.call("GET", "/v1/models", headers=good)[0] == 200
    assert (b"k3y-from-env", b"k3y-from-env") in compared and (b"wrong", b"k3y-from-env") in compared


def test_api_keys_come_from_the_environment_or_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    assert resolve_api_key(None, None) is None
    monkeypatch.setenv(KEY_VARIABLE, "from-env")
    assert resolve_api_key(None, None) == "from-env"
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    assert resolve_api_key(None, str(key_file)) == "from-file"  # a file or a flag wins over the environment
    assert resolve_api_key("from-flag", None) == "from-flag"
    with pytest.raises(ConfigError, match="not both"):
        resolve_api_key("x", str(key_file))
    with pytest.raises(ConfigError, match="cannot read the API key file"):
        resolve_api_key(None, str(tmp_path / "missing"))
    key_file.write_text("two words\n")
    with pytest.raises(ConfigError, match="printable ASCII") as bad:
        resolve_api_key(None, str(key_file))
    assert "two words" not in str(bad.value)  # the key is never shown


def test_the_cli_passes_the_key_from_the_environment_or_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[ServeConfig] = []
    monkeypatch.setattr("ftsdk.serving.server.serve", served.append)
    monkeypatch.setenv(KEY_VARIABLE, "env-key")
    assert main(["serve", str(tmp_path), "--host", "0.0.0.0"]) == 0
    key_file = tmp_path / "key"
    key_file.write_text("file-key\n")
    monkeypatch.delenv(KEY_VARIABLE)
    assert main(["serve", str(tmp_path), "--api-key-file", str(key_file), "--enable-admin", "--max-queue", "3",
                 "--request-timeout", "9", "--max-stop-chars", "64"]) == 0
    first, second = served
    assert first.api_key.get_secret_value() == "env-key" and "env-key" not in repr(first)
    assert second.api_key.get_secret_value() == "file-key" and second.enable_admin
    assert (second.max_queue, second.request_timeout, second.max_stop_chars) == (3, 9.0, 64)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost", "[::1]", "::ffff:127.0.0.1"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.7", "10.0.0.1", "8.8.8.8", "no-such-host.invalid"])
def test_non_loopback_hosts(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(ConfigError, match="without an API key"):
        check_exposure(host, has_key=False, insecure=False)
    check_exposure(host, has_key=True, insecure=False)
    check_exposure(host, has_key=False, insecure=True)


def test_a_public_bind_without_a_key_is_refused_before_loading(tmp_path: Path, no_model_loading,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from ftsdk.serving.server import check_config

    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    assert main(["serve", str(tmp_path), "--host", "0.0.0.0"]) == 2
    error = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0" in error and "--insecure" in error and KEY_VARIABLE in error
    check_config(ServeConfig(base=str(tmp_path), host="0.0.0.0", insecure=True))
    check_config(ServeConfig(base=str(tmp_path), host="0.0.0.0", api_key="k"))


# --- requests that try to hold the server -------------------------------------------------------------------------


def test_stop_sequences_are_capped(server: Live) -> None:
    status, error = server.chat(stop=["x" * 200, "y" * 200, "z" * 113])  # 513 > 512
    assert status == 400 and error["error"]["param"] == "stop"
    assert "513 characters" in error["error"]["message"] and "512" in error["error"]["message"]
    status, error = server.chat(stop=["a", "b", "c", "d", "e"])
    assert status == 400 and error["error"]["param"] == "stop"


def test_a_maximal_stop_does_not_hold_up_other_requests(server: Live) -> None:
    longest = ["a-stop-that-never-comes " * 5 + "q" * 8] * 4  # 4 x 128 = 512 characters, the limit
    assert sum(map(len, longest)) == 512
    timings: dict[str, float] = {}

    def timed(name: str, **fields: Any) -> None:
        start = time.monotonic()
        status, reply = server.chat(max_tokens=16, temperature=0, **fields)
        assert status == 200, reply
        timings[name] = time.monotonic() - start

    for _ in range(3):  # alternate: the machine is shared and noisy
        threads = [threading.Thread(target=timed, args=("stop",), kwargs={"stop": longest}),
                   threading.Thread(target=timed, args=("plain",))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert timings["plain"] < 3.0 and timings["stop"] < 3.0, timings


def test_a_disconnected_client_stops_its_generation(tiny_model_dir: Path) -> None:
    with live(config(tiny_model_dir)) as running:
        steps = slow_down(running, 0.03)  # 200 tokens: 6 s
        for stream in (False, True):
            steps.clear()
            sock = running.open_request({"model": "tiny", "messages": MESSAGES, "max_tokens": 200, "stream": stream})
            wait_until(lambda: len(steps) > 5, 10, "generation")
            sock.close()
            wait_until(lambda: running.queued() == 0, 2, "the queue place freed")
            stopped_at = len(steps)
            start = time.monotonic()
            status, reply = running.chat(max_tokens=2)
            assert status == 200 and time.monotonic() - start < 3.0  # not the ~5 s left of the abandoned one
            assert len(steps) <= stopped_at + 3 + 2  # at most a step in flight, then the 2-token request
            assert stopped_at < 60, "the abandoned generation kept running"


def test_a_request_past_its_deadline_gets_504_and_stops(tiny_model_dir: Path) -> None:
    with live(config(tiny_model_dir, request_timeout=1.0)) as running:
        steps = slow_down(running, 0.03)
        start = time.monotonic()
        status, error = running.chat(max_tokens=200)
        took = time.monotonic() - start
        assert status == 504 and error["error"]["code"] == "timeout" and error["error"]["type"] == "server_error"
        assert "1 s" in error["error"]["message"] and 0.9 < took < 3.5  # not the 6 s of 200 tokens
        count = len(steps)
        time.sleep(0.3)
        assert len(steps) <= count + 1  # stopped generating

        status, events = running.chat(max_tokens=200, stream=True)  # started: the error comes in-band
        assert status == 200
        data = [line.removeprefix("data: ") for line in events.splitlines() if line.startswith("data: ")]
        assert data[-1] == "[DONE]" and json.loads(data[-2])["error"]["code"] == "timeout"
        assert any("choices" in json.loads(item) for item in data[:-2])
        wait_until(lambda: running.queued() == 0, 2, "the queue place freed")
        assert running.chat(max_tokens=2)[0] == 200


def test_a_full_queue_answers_429_with_retry_after(tiny_model_dir: Path) -> None:
    with live(config(tiny_model_dir, max_queue=2)) as running:
        steps = slow_down(running, 0.03)
        long = {"model": "tiny", "messages": MESSAGES, "max_tokens": 200}
        running_one = running.open_request(long)
        wait_until(lambda: len(steps) > 0, 10, "the first generation")
        waiting_one = running.open_request(long)  # waits for the model: it holds a place too
        wait_until(lambda: running.queued() == 2, 5, "the second request queued")
        status, headers, raw = running.call("POST", "/v1/chat/completions", {**long, "max_tokens": 2})
        error = json.loads(raw)["error"]
        assert status == 429 and error["code"] == "queue_full" and error["type"] == "rate_limit_error"
        assert 1 <= int(headers["retry-after"]) <= 60
        assert running.call("GET", "/health")[0] == 200  # health is not queued

        waiting_one.close()  # gives its place back without ever running
        wait_until(lambda: running.queued() == 1, 2, "the waiting request's place freed")
        running_one.close()
        wait_until(lambda: running.queued() == 0, 2, "the running request's place freed")
        generated = len(steps)
        assert generated < 100  # neither long request ran to its end
        assert running.chat(max_tokens=2)[0] == 200


# --- values that used to crash ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [2**64, -1, 10**30, 1.5, "7", True, 1e400])
def test_seeds_beyond_64_bits_or_negative_get_400(server: Live, seed: Any) -> None:
    status, error = server.chat(seed=seed, max_tokens=2)
    assert status == 400 and error["error"]["param"] == "seed", error


def test_largest_seed_and_tiny_temperature_work(server: Live) -> None:
    assert server.chat(seed=2**64 - 1, temperature=0.7, max_tokens=2)[0] == 200
    greedy = server.chat(temperature=0, max_tokens=4)[1]["choices"][0]["message"]["content"]
    assert server.chat(temperature=1e-300, max_tokens=4)[1]["choices"][0]["message"]["content"] == greedy


@pytest.mark.parametrize("body", [
    b'{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}]}',
    b'{"model": "\\udfff", "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stop": ["\\ud83d"]}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "user": {"\\ud800": 1}}',
    b"[" * 50_000 + b"]" * 50_000,
    b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": ' + b"9" * 5000 + b"}",
    b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": Infinity}',
    b"\xff\xfe{}",
])
def test_hostile_bodies_get_400(server: Live, body: bytes) -> None:
    status, error = server.post("/v1/chat/completions", body)
    assert status == 400 and set(error["error"]) == {"message", "type", "param", "code"}, error


def test_a_huge_model_name_is_not_echoed_whole(server: Live) -> None:
    status, error = server.chat(model="m" * 500_000)
    assert status == 404 and len(error["error"]["message"]) <= 500
