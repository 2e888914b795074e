"""`ftsdk serve --backend llamacpp`: one GGUF base, GGUF LoRA adapters switched per request.

Each adapter's answer must equal llama-cpp-python's own one-LoRA-at-load path (`Llama(lora_path=...)`).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serving.test_server import make_adapter, post_raw, running_server

openai = pytest.importorskip("openai")
pytest.importorskip("llama_cpp")
pytest.importorskip("fastapi")

PROMPT = "the sky is"
MAX_TOKENS = 10


@pytest.fixture(scope="module")
def gguf_files(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from ftsdk.gguf.convert import convert_model
    from ftsdk.gguf.lora import convert_adapter

    folder = tmp_path_factory.mktemp("serve-gguf")
    files = {"base": folder / "tiny.gguf"}
    convert_model(tiny_model_dir, files["base"], "f32")
    for name, seed in (("alpha", 1), ("beta", 2)):
        files[name] = folder / f"{name}.gguf"
        convert_adapter(make_adapter(tiny_model_dir, folder / name, seed), files[name], "f32", base=tiny_model_dir)
    return files


@pytest.fixture(scope="module")
def expected(gguf_files: dict[str, Path]) -> dict[str, str]:
    """Greedy completions from a Llama loaded with each LoRA applied at load (None: the base)."""
    from ftsdk.gguf.runtime import load_gguf

    replies = {}
    for name in ("tiny", "alpha", "beta"):
        llm = load_gguf(gguf_files["base"], lora=None if name == "tiny" else gguf_files[name], n_ctx=0, logits_all=False)
        out = llm.create_completion(PROMPT, max_tokens=MAX_TOKENS, temperature=0)
        replies[name] = out["choices"][0]["text"]
        llm.close()
    return replies


@pytest.fixture(scope="module")
def server(gguf_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    arguments = [str(gguf_files["base"]), "--backend", "llamacpp", "--adapter", f"alpha={gguf_files['alpha']}",
                 "--adapter", f"beta={gguf_files['beta']}", "--enable-admin"]
    with running_server(arguments, tmp_path_factory.mktemp("serve-log") / "server.log") as url:
        yield url


def _complete(client: Any, model: str) -> str:
    reply = client.completions.create(model=model, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0)
    return reply.choices[0].text


def test_adapters_switch_per_request_as_one_lora_loads_do(server: str, gguf_files: dict[str, Path],
                                                          expected: dict[str, str]) -> None:
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)
    assert {m.id for m in client.models.list().data} == {"tiny", "alpha", "beta"}
    assert len(set(expected.values())) == 3
    for name in ("alpha", "tiny", "beta", "alpha", "tiny"):  # back and forth: no state leaks between adapters
        assert _complete(client, name) == expected[name], name

    streamed = client.completions.create(model="beta", prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == expected["beta"]
    chat = client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": PROMPT}], max_tokens=4,
                                          temperature=0)
    assert chat.usage.completion_tokens == 4 and chat.usage.prompt_tokens > 4

    status, card = post_raw(server, "/v1/adapters", json.dumps({"name": "gamma", "path": str(gguf_files["beta"])}).encode())
    assert status == 200 and card["id"] == "gamma"
    assert _complete(client, "gamma") == expected["beta"]
    with urllib.request.urlopen(urllib.request.Request(f"{server}/v1/adapters/beta", method="DELETE"), timeout=30):
        pass
    with pytest.raises(openai.NotFoundError):
        _complete(client, "beta")
    assert _complete(client, "gamma") == expected["beta"]
    status, error = post_raw(server, "/v1/adapters", json.dumps({"name": "delta", "path": str(gguf_files["base"])}).encode())
    assert status == 400 and error["error"]["code"] == "adapter_load_failed"
    assert _complete(client, "alpha") == expected["alpha"]
