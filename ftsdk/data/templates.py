"""Chat templates a run can choose: named built-ins, or a Jinja file, checked before any model loads.

A base model has no chat template; an instruct model may have one the user wants to replace. The
built-ins follow the published formats of their model families, written so that every rendering of a
conversation extends the rendering of its shorter prefixes (no turn is rewritten once later turns are
added), which the assistant-only loss mask (:mod:`ftsdk.data.tokenize`) relies on. Where a family's
official template would rewrite earlier turns (Mistral's and Gemma's move the system prompt), the built-in
puts the system prompt into the first user turn instead. Markers missing from a tokenizer's vocabulary are
tokenized as plain text, so choose the format the model family was pre-trained with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftsdk.plugin.errors import ConfigError, DataError

_SYSTEM_INTO_FIRST_USER = (
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{%- set system = messages[0]['content'] + '\\n\\n' %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system = '' %}{%- endif %}"
)
_TOOLS_CHATML = (
    "{%- if tools %}{{ '<|im_start|>system\\n' }}{% if messages[0]['role'] == 'system' %}"
    "{{ messages[0]['content'] }}{% else %}{{ DEFAULT_SYSTEM }}{% endif %}"
    "{{ '\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{ '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{ '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags.<|im_end|>\\n' }}"
    "{%- elif messages[0]['role'] == 'system' %}"
    "{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- elif DEFAULT_SYSTEM %}{{ '<|im_start|>system\\n' + DEFAULT_SYSTEM + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m['role'] == 'tool' %}"
    "{{ '<|im_start|>user\\n<tool_response>\\n' + m['content'] + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- elif m['role'] != 'system' %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] }}"
    "{%- for c in m.get('tool_calls') or [] %}"
    "{{ '\\n<tool_call>\\n{\"name\": \"' + c['function']['name'] + '\", \"arguments\": ' "
    "+ (c['function']['arguments'] | tojson) + '}\\n</tool_call>' }}{%- endfor %}"
    "{{ '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)

#: name -> Jinja text
BUILTIN_TEMPLATES: dict[str, str] = {
    "chatml": _TOOLS_CHATML.replace("DEFAULT_SYSTEM", "''"),
    "qwen": _TOOLS_CHATML.replace("DEFAULT_SYSTEM", "'You are a helpful assistant.'"),
    "llama3": (
        "{{ bos_token }}{%- for m in messages %}"
        "{{ '<|start_header_id|>' + ('ipython' if m['role'] == 'tool' else m['role']) + '<|end_header_id|>\\n\\n' }}"
        "{{- m['content'] | trim }}"
        "{%- for c in m.get('tool_calls') or [] %}"
        "{{ '{\"name\": \"' + c['function']['name'] + '\", \"parameters\": ' + (c['function']['arguments'] | tojson)"
        " + '}' }}{%- endfor %}{{ '<|eot_id|>' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
    ),
    "mistral": (
        _SYSTEM_INTO_FIRST_USER + "{{ bos_token }}{%- for m in messages %}"
        "{%- if m['role'] == 'user' %}{{ '[INST] ' + (system if loop.first else '') + m['content'] + ' [/INST]' }}"
        "{%- elif m['role'] == 'assistant' %}{{ m['content'] + eos_token }}"
        "{%- else %}{{ '[TOOL_RESULTS] ' + m['content'] + ' [/TOOL_RESULTS]' }}{%- endif %}{%- endfor %}"
    ),
    "gemma": (
        _SYSTEM_INTO_FIRST_USER + "{{ bos_token }}{%- for m in messages %}"
        "{%- set role = 'model' if m['role'] == 'assistant' else 'user' %}"
        "{{ '<start_of_turn>' + role + '\\n' + (system if loop.first else '') + m['content'] | trim"
        " + '<end_of_turn>\\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{%- endif %}"
    ),
    "phi3": (
        "{%- for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{ '<|assistant|>\\n' }}{%- endif %}"
    ),
}

_SAMPLE = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What color is the sky?"},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "And grass?"},
    {"role": "assistant", "content": "Green."},
]


class _Renderer:
    """Renders a template as transformers does (sandboxed Jinja, trim_blocks, lstrip_blocks)."""

    def __init__(self, text: str) -> None:
        import json

        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        environment.filters["tojson"] = lambda value, indent=None: json.dumps(value, indent=indent)
        environment.globals["raise_exception"] = raise_exception
        self.template = environment.from_string(text)
        self.chat_template = text

    def apply_chat_template(self, messages: list[dict[str, Any]], tools: Any = None, tokenize: bool = False,
                            add_generation_prompt: bool = False) -> str:
        return self.template.render(messages=messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                    bos_token="<s>", eos_token="</s>")


def load_chat_template(value: str, base: Path | None = None) -> str:
    """The Jinja text of a built-in name or of a template file, checked on a sample conversation.

    Raises ConfigError when the file is missing, the template does not compile or render, drops a turn, or
    rewrites earlier turns once later ones are added (the assistant-only mask could not find the replies).
    """
    if value in BUILTIN_TEMPLATES:
        text = BUILTIN_TEMPLATES[value]
    else:
        path = Path(value) if base is None or Path(value).is_absolute() else base / value
        if not path.is_file():
            raise ConfigError(f"chat_template {value!r} is neither a built-in nor a file",
                              hint=f"built-ins: {', '.join(BUILTIN_TEMPLATES)}; or a Jinja file (.jinja)")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"chat_template {path}: cannot read it ({exc})") from None
    check_chat_template(text, value)
    return text


def check_chat_template(text: str, name: str) -> None:
    """Render a sample conversation with ``text``; refuse what the trainer could not use."""
    from jinja2.exceptions import TemplateError

    from ftsdk.data.tokenize import segments

    try:
        renderer = _Renderer(text)
        rendered = renderer.apply_chat_template(_SAMPLE)
        missing = [m["content"] for m in _SAMPLE if m["content"] not in rendered]
        if missing:
            raise ConfigError(f"chat_template {name!r} drops turns of a conversation (missing: {missing})")
        trained = [piece for piece, learned in segments(renderer, _SAMPLE) if learned]  # type: ignore[arg-type]
    except TemplateError as exc:
        raise ConfigError(f"chat_template {name!r} does not render a system/user/assistant conversation: {exc}",
                          hint="check the Jinja syntax; the template receives messages, tools, "
                          "add_generation_prompt, bos_token and eos_token") from None
    except DataError as exc:
        raise ConfigError(f"chat_template {name!r}: {exc.message}", hint=exc.hint) from None
    if len(trained) != 2 or not trained[0].startswith("Blue.") or not trained[1].startswith("Green."):
        raise ConfigError(f"chat_template {name!r} does not start the assistant turn where its generation prompt "
                          "ends, so assistant replies cannot be located",
                          hint="add_generation_prompt must render exactly the text that opens an assistant turn")
