"""``ftsdk serve``: an OpenAI-compatible HTTP server over one base model and its adapters."""

from __future__ import annotations

import argparse
import sys


def add_commands(commands: argparse._SubParsersAction) -> None:
    serving = commands.add_parser(
        "serve", help="serve a base model and adapters over an OpenAI-compatible HTTP API (pick one per request)"
    )
    serving.add_argument("base", help="base model: an alias (smollm2-135m), a model folder, or a .gguf file (llamacpp)")
    serving.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                         help="serve the adapter at PATH as model NAME (repeat for more)")
    serving.add_argument("--backend", default="transformers", choices=["transformers", "llamacpp"],
                         help="transformers+peft (any machine) or llama.cpp (GGUF files, CPU) (%(default)s)")
    serving.add_argument("--host", default="127.0.0.1",
                         help="address to bind (%(default)s); any other than the loopback needs an API key or --insecure")
    serving.add_argument("--port", type=int, default=8000, help="port to listen on (%(default)s)")
    serving.add_argument("--served-name", help="the base model's name in requests (default: alias or file name)")
    serving.add_argument("--max-context", type=int, help="most prompt + completion tokens per request")
    serving.add_argument("--default-max-tokens", type=int, default=256,
                         help="completion tokens when a request gives no max_tokens (%(default)s)")
    serving.add_argument("--threads", type=int, help="CPU threads for generation")
    serving.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="transformers backend")
    serving.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                         help="transformers backend (auto: float32 on CPU)")
    serving.add_argument("--api-key", metavar="KEY",
                         help="require `Authorization: Bearer KEY`; visible to other users in `ps`, so prefer "
                         "--api-key-file or the FTSDK_API_KEY environment variable (read when neither is given)")
    serving.add_argument("--api-key-file", metavar="PATH", help="read the API key from this file (one line)")
    serving.add_argument("--insecure", action="store_true",
                         help="allow a --host other than the loopback without an API key (a proxy authenticates)")
    serving.add_argument("--enable-admin", action="store_true",
                         help="serve POST /v1/adapters and DELETE /v1/adapters/NAME (load adapters from this "
                         "machine's disk, unload them) at run time; off by default")
    serving.add_argument("--max-queue", type=int, default=32, metavar="N",
                         help="most completion requests held at once, running or waiting; more get 429 (%(default)s)")
    serving.add_argument("--request-timeout", type=float, default=300.0, metavar="SECONDS",
                         help="most seconds a completion request may take, waiting included; then 504 (%(default)s)")
    serving.add_argument("--max-batch-size", type=int, default=8, metavar="N",
                         help="transformers backend: most whole requests generated together in one batch; 1: one "
                         "at a time (%(default)s)")
    serving.add_argument("--batch-wait-ms", type=float, default=10.0, metavar="MS",
                         help="transformers backend: how long a request waits for others to join its batch "
                         "(%(default)s)")
    serving.add_argument("--max-stop-chars", type=int, default=512, metavar="N",
                         help="most characters of a request's stop sequences together; more get 400 (%(default)s)")
    serving.set_defaults(run=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from ftsdk.plugin.errors import ConfigError
    from ftsdk.plugin.settings import validate_config
    from ftsdk.serving.auth import resolve_api_key
    from ftsdk.serving.config import ServeConfig
    from ftsdk.serving.server import serve

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
        "threads": args.threads, "device": args.device, "dtype": args.dtype,
        "api_key": resolve_api_key(args.api_key, args.api_key_file), "insecure": args.insecure,
        "enable_admin": args.enable_admin, "max_queue": args.max_queue, "request_timeout": args.request_timeout,
        "max_stop_chars": args.max_stop_chars, "max_batch_size": args.max_batch_size,
        "batch_wait_ms": args.batch_wait_ms,
    }
    if args.api_key is not None:
        print("ftsdk serve: warning: a key given with --api-key shows in `ps` to every user of this machine; "
              "prefer FTSDK_API_KEY or --api-key-file", file=sys.stderr)
    serve(validate_config(ServeConfig, options, where="serve"))
    return 0
