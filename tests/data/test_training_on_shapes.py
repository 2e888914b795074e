"""Training on the new data shapes end to end on the tiny model: raw text on a base model, tool calls, last turn."""

from __future__ import annotations

import json
import shutil

import pytest
from transformers import AutoTokenizer

from ftsdk import Tuner
from ftsdk.artifacts import read_manifest
from ftsdk.testing import write_jsonl
from tests.data.test_shapes import TOOL_ROW, TOOLS_TEMPLATE

TRAINING = {"max_steps": 4, "learning_rate": 5e-3, "batch_size": 4, "logging_steps": 1, "seed": 3, "max_length": 32}


def with_template(model_dir, target, template):
    """A copy of the tiny model whose tokenizer has ``template`` (None: a base model without one)."""
    shutil.copytree(model_dir, target)
    for name in ("chat_template.jinja", "chat_template.json"):
        (target / name).unlink(missing_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(target)
    tokenizer.chat_template = template
    config = json.loads((target / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (target / "tokenizer_config.json").write_text(json.dumps(config))
    if template is not None:
        tokenizer.save_pretrained(target)
    assert AutoTokenizer.from_pretrained(target).chat_template == template
    return target


def losses(result) -> list[float]:
    return [entry["loss"] for entry in result.log_history if "loss" in entry]


def test_raw_text_trains_a_base_model_without_a_template(tiny_model_dir, tmp_path):
    base = with_template(tiny_model_dir, tmp_path / "base", None)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("\n\n".join(f"the sky is blue and the grass is green {i}" for i in range(20)))
    (corpus / "b.txt").write_text("snow is white and coal is black\n" * 30)
    result = Tuner(str(base), adapter="lora", objective="sft", training=TRAINING).fit(corpus, output_dir=tmp_path / "o")
    assert losses(result)[-1] < losses(result)[0]
    assert read_manifest(result.output_dir)["data"]["train"]["format"] == "text"


def test_tool_calling_rows_train(tiny_model_dir, tmp_path):
    model = with_template(tiny_model_dir, tmp_path / "tools-model", TOOLS_TEMPLATE)
    data = write_jsonl(tmp_path / "tools.jsonl", [TOOL_ROW] * 8)
    result = Tuner(str(model), adapter="lora", objective="sft", training=TRAINING | {"max_length": 256}).fit(
        data, output_dir=tmp_path / "o")
    assert losses(result)[-1] < losses(result)[0]


@pytest.mark.parametrize("turns", ["all", "last"])
def test_multi_turn_trains_on_all_or_the_last_turn(tiny_model_dir, tmp_path, turns):
    rows = [{"messages": [{"role": "user", "content": "sky?"}, {"role": "assistant", "content": "blue"},
                          {"role": "user", "content": "grass?"}, {"role": "assistant", "content": "green"}]}] * 8
    tuner = Tuner(str(tiny_model_dir), adapter="lora", objective="sft", objective_config={"assistant_turns": turns},
                  training=TRAINING | {"max_length": 128})
    result = tuner.fit(write_jsonl(tmp_path / "d.jsonl", rows), output_dir=tmp_path / "o")
    assert read_manifest(result.output_dir)["objective"]["config"]["assistant_turns"] == turns


def test_renamed_parquet_columns_train_and_are_recorded(tiny_model_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.data.test_sources import RENAME, ROWS

    pq.write_table(pa.Table.from_pylist(ROWS * 3), tmp_path / "d.parquet")
    tuner = Tuner(str(tiny_model_dir), adapter="lora", objective="sft", training=TRAINING | {"max_length": 64})
    result = tuner.fit(tmp_path / "d.parquet", output_dir=tmp_path / "o", columns=RENAME)
    train = read_manifest(result.output_dir)["data"]["train"]
    assert train["columns"] == RENAME and train["format"] == "prompt_completion" and train["rows"] == 9
    assert "prompt_completion" in (result.output_dir / "report.md").read_text()


def test_a_hub_data_set_trains_from_the_offline_datasets_cache(tiny_model_dir, tmp_path):
    from tests.helpers import run_python
    from tests.data.test_sources import build_datasets_cache

    env = build_datasets_cache(tmp_path, "ftsdk-test/colors")
    code = (
        "import json\nfrom ftsdk import Tuner\nfrom ftsdk.artifacts import read_manifest\n"
        f"tuner = Tuner({str(tiny_model_dir)!r}, training={{'max_steps': 2, 'batch_size': 2}})\n"
        f"result = tuner.fit({{'hub': 'ftsdk-test/colors'}}, eval_data={{'hub': 'ftsdk-test/colors', 'split': 'test'}},"
        f" output_dir={str(tmp_path / 'o')!r}, columns={{'question': 'prompt', 'answer': 'completion'}})\n"
        "print(json.dumps(read_manifest(result.output_dir)['data']))\n"
    )
    result = run_python(code, env=env | {"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["train"]["path"] == "hf:ftsdk-test/colors@train" and data["train"]["rows"] == 2
    assert data["eval"]["hub"]["split"] == "test" and data["eval"]["columns"]["answer"] == "completion"
