"""`ftsdk serve` end to end: a real server on 127.0.0.1, driven with the official `openai` client.

One tiny base model and two LoRA adapters with different random weights; every answer is compared
with greedy transformers+peft generation on the same prompt.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

QUESTION = [{"role": "user", "content": "what is the color of the sky"}]
MAX_TOKENS = 12


def make_adapter(base: Path, out: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    return out


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, deadline_s: float = 90) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{process.stderr.read()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("server did not become healthy in time")


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("serve-adapters")
    return {name: make_adapter(tiny_model_dir, folder / name, seed) for name, seed in (("alpha", 1), ("beta", 2))}


@contextlib.contextmanager
def running_server(arguments: list[str], log: Path) -> Iterator[str]:
    """``ftsdk serve ARGUMENTS`` on a free loopback port; yields its base URL and always stops it."""
    port = free_port()
    command = [sys.executable, "-m", "ftsdk.cli", "serve", *arguments, "--port", str(port), "--threads", "1"]
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, adapters: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server's base URL: the tiny base served as `tiny`, with the adapters alpha and beta."""
    arguments = [str(tiny_model_dir), "--served-name", "tiny", "--max-context", "128", "--enable-admin"]
    for name, path in adapters.items():
        arguments += ["--adapter", f"{name}={path}"]
    with running_server(arguments, tmp_path_factory.mktemp("serve-log") / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> Any:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def expected(tiny_model_dir: Path, adapters: dict[str, Path]) -> dict[str, dict[str, str]]:
    """Greedy replies straight from transformers+peft: chat and text prompts, base and each adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    chat_text = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    prompts = {"chat": tokenizer(chat_text, add_special_tokens=False)["input_ids"],
               "text": tokenizer("the sky is")["input_ids"]}
    replies: dict[str, dict[str, str]] = {}
    for name in ("tiny", *adapters):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        if name != "tiny":
            model = PeftModel.from_pretrained(model, adapters[name])
        replies[name] = {}
        for kind, ids in prompts.items():
            with torch.inference_mode():
                out = model.generate(torch.tensor([ids]), max_new_tokens=MAX_TOKENS, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            replies[name][kind] = tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
    return replies


def _chat(client: Any, model: str, **options: Any) -> Any:
    options = {"max_tokens": MAX_TOKENS, "temperature": 0, **options}
    return client.chat.completions.create(model=model, messages=QUESTION, **options)


def post_raw(server: str, path: str, data: bytes | Iterator[bytes]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"{server}{path}", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_models_lists_the_base_and_each_adapter(client: Any) -> None:
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"tiny", "alpha", "beta"}
    assert models["alpha"].model_extra["parent"] == "tiny"


def test_each_adapter_answers_as_transformers_peft_does(client: Any, expected: dict[str, dict[str, str]]) -> None:
    replies = {name: _chat(client, name) for name in ("tiny", "alpha", "beta")}
    for name, reply in replies.items():
        assert reply.choices[0].message.content == expected[name]["chat"], name
        assert reply.model == name
        assert reply.usage.completion_tokens <= MAX_TOKENS
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert len({expected[name]["chat"] for name in replies}) == 3  # the adapters really change the answer


def test_streaming_returns_the_same_text(client: Any, expected: dict[str, dict[str, str]]) -> None:
    chunks = list(_chat(client, "beta", stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected["beta"]["chat"]
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [_chat(client, "beta").choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == _chat(client, "beta").usage.completion_tokens


def test_completions_endpoint(client: Any, expected: dict[str, dict[str, str]]) -> None:
    reply = client.completions.create(model="alpha", prompt="the sky is", max_tokens=MAX_TOKENS, temperature=0)
    assert reply.choices[0].text == expected["alpha"]["text"]
    streamed = client.completions.create(model="alpha", prompt="the sky is", max_tokens=MAX_TOKENS, temperature=0,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == expected["alpha"]["text"]


def test_stop_sequences_cut_the_text_streamed_or_not(client: Any, expected: dict[str, dict[str, str]]) -> None:
    full = expected["alpha"]["chat"]
    stop = full[4:6]
    reply = _chat(client, "alpha", stop=[stop])
    assert reply.choices[0].message.content == full[: full.find(stop)]
    assert reply.choices[0].finish_reason == "stop"
    chunks = _chat(client, "alpha", stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full[: full.find(stop)]


def test_sampling_with_a_seed_repeats(client: Any) -> None:
    first, second = (_chat(client, "beta", temperature=1.0, seed=7).choices[0].message.content for _ in range(2))
    assert first == second


def test_adapters_load_and_unload_at_run_time(server: str, client: Any, adapters: dict[str, Path],
                                              expected: dict[str, dict[str, str]]) -> None:
    status, card = post_raw(server, "/v1/adapters", json.dumps({"name": "gamma", "path": str(adapters["alpha"])}).encode())
    assert status == 200 and card["id"] == "gamma" and card["parent"] == "tiny"
    assert _chat(client, "gamma").choices[0].message.content == expected["alpha"]["chat"]
    status, error = post_raw(server, "/v1/adapters", json.dumps({"name": "gamma", "path": str(adapters["beta"])}).encode())
    assert status == 409 and error["error"]["code"] == "model_exists"
    status, error = post_raw(server, "/v1/adapters", json.dumps({"name": "delta", "path": "/no/such/dir"}).encode())
    assert status == 400 and error["error"]["code"] == "adapter_load_failed"

    deleted = urllib.request.Request(f"{server}/v1/adapters/gamma", method="DELETE")
    with urllib.request.urlopen(deleted, timeout=30) as reply:
        assert json.loads(reply.read())["deleted"] is True
    with pytest.raises(openai.NotFoundError):
        _chat(client, "gamma")
    assert {m.id for m in client.models.list().data} == {"tiny", "alpha", "beta"}
    assert _chat(client, "alpha").choices[0].message.content == expected["alpha"]["chat"]


def test_bad_requests_get_json_errors_and_the_server_keeps_serving(server: str, client: Any,
                                                                  expected: dict[str, dict[str, str]]) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        _chat(client, "no-such-model")
    assert unknown.value.status_code == 404 and unknown.value.code == "model_not_found"

    with pytest.raises(openai.BadRequestError) as two:
        _chat(client, "alpha", n=2)
    assert two.value.param == "n"

    long_prompt = [{"role": "user", "content": "the sky is blue " * 100}]
    with pytest.raises(openai.BadRequestError) as oversized:
        client.chat.completions.create(model="alpha", messages=long_prompt, max_tokens=4)
    assert oversized.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as too_many:
        _chat(client, "alpha", max_tokens=1000)
    assert too_many.value.code == "context_length_exceeded"

    status, error = post_raw(server, "/v1/chat/completions", b'{"model": "alpha", "messages": [')
    assert status == 400 and error["error"]["code"] == "invalid_json"
    status, error = post_raw(server, "/v1/chat/completions", b'{"model": "alpha"}')
    assert status == 400 and error["error"]["param"] == "messages"
    status, error = post_raw(server, "/v1/chat/completions", json.dumps(
        {"model": "alpha", "messages": QUESTION, "temperature": "hot"}).encode())
    assert status == 400 and error["error"]["param"] == "temperature"
    status, error = post_raw(server, "/v1/completions", json.dumps({"model": "alpha", "prompt": "x", "logprobs": 2}).encode())
    assert status == 400 and "logprobs" in error["error"]["message"]
    status, error = post_raw(server, "/v1/completions", json.dumps({"model": "alpha", "prompt": "x" * 2_000_000}).encode())
    assert status == 413 and error["error"]["type"] == "invalid_request_error"
    streamed = iter([b'{"model": "alpha", "prompt": "', b"x" * 2_000_000, b'"}'])  # chunked: no Content-Length
    status, error = post_raw(server, "/v1/completions", streamed)
    assert status == 413 and error["error"]["code"] == "request_too_large"

    assert _chat(client, "alpha").choices[0].message.content == expected["alpha"]["chat"]
