"""``ftsdk serve``: an OpenAI-compatible HTTP server over one base model and its adapters."""

from __future__ import annotations

import argparse


def add_commands(commands: argparse._SubParsersAction) -> None:
    serving = commands.add_parser(
        "serve", help="serve a base model and adapters over an OpenAI-compatible HTTP API (pick one per request)"
    )
    serving.add_argument("base", help="base model: an alias (smollm2-135m), a model folder, or a .gguf file (llamacpp)")
    serving.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                         help="serve the adapter at PATH as model NAME (repeat for more)")
    serving.add_argument("--backend", default="transformers", choices=["transformers", "llamacpp"],
                         help="transformers+peft (any machine) or llama.cpp (GGUF files, CPU) (%(default)s)")
    serving.add_argument("--host", default="127.0.0.1", help="address to bind (%(default)s)")
    serving.add_argument("--port", type=int, default=8000, help="port to listen on (%(default)s)")
    serving.add_argument("--served-name", help="the base model's name in requests (default: alias or file name)")
    serving.add_argument("--max-context", type=int, help="most prompt + completion tokens per request")
    serving.add_argument("--default-max-tokens", type=int, default=256,
                         help="completion tokens when a request gives no max_tokens (%(default)s)")
    serving.add_argument("--threads", type=int, help="CPU threads for generation")
    serving.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="transformers backend")
    serving.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                         help="transformers backend (auto: float32 on CPU)")
    serving.add_argument("--api-key", help="require `Authorization: Bearer KEY` on /v1 requests")
    serving.add_argument("--no-adapter-changes", action="store_true",
                         help="do not serve the endpoints that load and unload adapters at run time")
    serving.set_defaults(run=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from ftsdk.errors import ConfigError
    from ftsdk.serving.config import ServeConfig
    from ftsdk.serving.server import serve
    from ftsdk.validation import validate_config

    adapters: dict[str, str] = {}
    for item in args.adapter:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--adapter '{item}' is not NAME=PATH", hint="e.g. --adapter support=runs/support")
        if name in adapters:
            raise ConfigError(f"--adapter name '{name}' is given twice", hint="give each adapter its own name")
        adapters[name] = path
    options = {
        "base": args.base, "adapters": adapters, "backend": args.backend, "host": args.host, "port": args.port,
        "served_name": args.served_name, "max_context": args.max_context, "default_max_tokens": args.default_max_tokens,
        "threads": args.threads, "device": args.device, "dtype": args.dtype, "api_key": args.api_key,
        "allow_adapter_changes": not args.no_adapter_changes,
    }
    serve(validate_config(ServeConfig, options, where="serve"))
    return 0
