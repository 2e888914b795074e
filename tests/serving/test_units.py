"""`ftsdk serve` pieces without a server: stop sequences, request validation, early CLI errors."""

from __future__ import annotations

import random
import socket

import pytest
from pydantic import ValidationError

from ftsdk.cli import main
from ftsdk.plugin.errors import ConfigError
from ftsdk.serving.config import ServeConfig
from ftsdk.serving.schemas import ChatCompletionRequest, CompletionRequest
from ftsdk.serving.stops import StopFilter


def _cut(text: str, stops: list[str]) -> str:
    """The reference: the whole text cut at the earliest stop sequence."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(hits)] if hits else text


@pytest.mark.parametrize("seed", range(200))
def test_stop_filter_on_any_split_equals_cutting_the_whole_text(seed: int) -> None:
    rng = random.Random(seed)
    text = "".join(rng.choice("abc \n") for _ in range(rng.randint(0, 40)))
    stops = ["".join(rng.choice("abc \n") for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 3))]
    cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 8))))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    stop_filter = StopFilter(stops)
    sent = "".join(stop_filter.feed(piece) for piece in pieces) + stop_filter.flush()
    assert sent == _cut(text, stops)
    assert stop_filter.stopped == any(s in text for s in stops)


def test_requests_validate_what_they_use_and_tolerate_the_rest() -> None:
    ok = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "developer", "content": [{"type": "text", "text": "hi"}]}],
         "user": "someone", "frequency_penalty": 0, "logprobs": False, "stop": "x"})
    assert ok.messages[0].as_template_message() == {"role": "system", "content": "hi"}
    assert ok.stop_list == ["x"] and ok.token_limit is None
    assert CompletionRequest.model_validate({"model": "m", "prompt": ["one"]}).text == "one"
    for bad in ({"n": 2}, {"temperature": 3}, {"stop": ["a"] * 5}, {"stop": [""]}, {"top_logprobs": 2},
                {"messages": []}, {"messages": [{"role": "user", "content": [{"type": "image_url", "url": "x"}]}]}):
        with pytest.raises(ValidationError):
            ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "q"}], **bad})
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"model": "m", "prompt": ["one", "two"]})


def test_config_names_and_defaults() -> None:
    assert ServeConfig(base="runs/model/").base_name == "model"
    assert ServeConfig(base="m/tiny.Q4_0.gguf").base_name == "tiny.Q4_0"
    assert ServeConfig(base="smollm2-135m").host == "127.0.0.1"
    with pytest.raises(ValidationError):
        ServeConfig(base="b", adapters={"bad name": "x"})


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--adapter", "nameonly"], "is not NAME=PATH"),
        (["--adapter", "a=x", "--adapter", "a=y"], "given twice"),
        (["--adapter", "a=/no/such/adapter"], "not a PEFT adapter folder"),
        (["--adapter", "tiny=/x"], "also the base model's name"),
        (["--backend", "llamacpp"], "serves a .gguf file"),
        (["--port", "0"], "serve.port"),
    ],
)
def test_cli_refuses_bad_options_before_loading(arguments: list[str], message: str, tmp_path, no_model_loading,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "tiny"
    base.mkdir()
    assert main(["serve", str(base), *arguments]) == 2
    assert message in capsys.readouterr().err


def test_a_busy_port_is_refused_before_loading(tmp_path, no_model_loading) -> None:
    from ftsdk.serving.server import serve

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ConfigError, match="cannot listen"):
            serve(ServeConfig(base=str(tmp_path), adapters={"a": str(adapter)}, port=taken.getsockname()[1]))


def test_the_api_key_guard() -> None:
    from starlette.datastructures import Headers

    from ftsdk.serving.guard import ApiKeyGuard

    guard = ApiKeyGuard(app=None, key="s3cret")  # type: ignore[arg-type]
    assert guard.allows(Headers({"authorization": "Bearer s3cret"}))
    assert guard.allows(Headers({"authorization": "bearer s3cret"}))  # the scheme is case-insensitive
    for wrong in ({}, {"authorization": "Bearer other"}, {"authorization": "s3cret"},
                  {"authorization": "Bearer s3cret2"}, {"authorization": "Bearer s3cre"}):
        assert not guard.allows(Headers(wrong))


@pytest.mark.parametrize(("text", "sent"), [
    ("adapter '/home/me/runs/a' is not a PEFT adapter folder", "adapter '<path>' is not a PEFT adapter folder"),
    ("could not load /tmp/x/adapter_model.safetensors: bad", "could not load <path>: bad"),
    (r"cannot read C:\Users\me\key", "cannot read <path>"),
    ("use letters, digits and ._:/- (at most 128)", "use letters, digits and ._:/- (at most 128)"),
    ("see http://127.0.0.1:8000/v1 and runs/a/b", "see http://127.0.0.1:8000/v1 and runs/a/b"),
    ("lone \ud800 surrogate", "lone ? surrogate"),
    ("x" * 600, "x" * 497 + "..."),
])
def test_error_messages_hold_no_paths_and_are_bounded(text: str, sent: str) -> None:
    from ftsdk.serving.errors import redact

    assert redact(text) == sent
