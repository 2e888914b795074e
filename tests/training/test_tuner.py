"""End-to-end LoRA SFT on the tiny model: training, outputs, reloading, reproducibility, failure modes."""

from __future__ import annotations

import json

import pytest
import torch

from ftsdk import ConfigError, DataError, OutputExistsError, Tuner
from ftsdk.artifacts import read_manifest, sha256_file

TRAINING = {"epochs": 3, "learning_rate": 5e-3, "batch_size": 8, "logging_steps": 2, "seed": 7}
ADAPTER = {"r": 8, "dropout": 0.0}


def make_tuner(model_dir, **overrides) -> Tuner:
    options = {"adapter_config": ADAPTER, "training": TRAINING} | overrides
    return Tuner(str(model_dir), adapter="lora", objective="sft", **options)


@pytest.fixture(scope="module")
def fitted(tiny_model_dir, chat_data, tmp_path_factory):
    train, evaluation = chat_data
    tuner = make_tuner(tiny_model_dir)
    result = tuner.fit(train, eval_data=evaluation, output_dir=tmp_path_factory.mktemp("runs") / "first")
    return tuner, result


def test_loss_falls_and_metrics_are_reported(fitted):
    _, result = fitted
    losses = [entry["loss"] for entry in result.log_history if "loss" in entry]
    assert len(losses) >= 5 and losses[-1] < losses[0] - 0.3
    assert {"train_loss", "eval_loss", "num_tokens"} <= set(result.metrics)


def test_output_folder_is_complete(fitted):
    _, result = fitted
    names = {p.name for p in result.output_dir.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "ftsdk.json", "README.md", "loss.png",
            "log_history.json", "tokenizer.json"} <= names
    assert (result.output_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    leftovers = [p.name for p in result.output_dir.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_manifest_records_what_reproduces_the_run(fitted, chat_data):
    _, result = fitted
    manifest = read_manifest(result.output_dir)
    assert manifest == result.manifest
    assert manifest["adapter"]["name"] == "lora" and manifest["adapter"]["distribution"] == "ftsdk"
    assert manifest["adapter"]["config"]["r"] == 8 and manifest["objective"]["name"] == "sft"
    assert manifest["data"]["train"]["sha256"] == sha256_file(chat_data[0])
    assert manifest["data"]["eval"]["rows"] == 16 and manifest["seed"] == 7
    assert manifest["placement"]["device"] == "cpu" and manifest["placement"]["dtype"] == "float32"
    assert manifest["placement"]["mixed_precision"] in ("bf16", "no")  # bf16 where the CPU computes it natively
    assert {"torch", "transformers", "peft", "trl"} <= set(manifest["libraries"])
    card = (result.output_dir / "README.md").read_text()
    assert card.startswith("---\nbase_model:") and "library_name: peft" in card and "eval_loss" in card


def test_adapter_reloads_in_peft_and_merges_exactly(fitted, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tuner, result = fitted
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    tuner.model.eval()
    with torch.no_grad():
        trained = tuner.model(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        reloaded = PeftModel.from_pretrained(base, result.output_dir).eval()
        peft_logits = reloaded(input_ids=ids).logits
        merged = reloaded.merge_and_unload()(input_ids=ids).logits
    torch.testing.assert_close(peft_logits, trained)
    torch.testing.assert_close(merged, peft_logits, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(merged, AutoModelForCausalLM.from_pretrained(tiny_model_dir)(input_ids=ids).logits)


def test_same_manifest_same_adapter(fitted, chat_data, tmp_path):
    from safetensors.torch import load_file

    _, result = fitted
    again = Tuner.from_manifest(read_manifest(result.output_dir)).fit(chat_data[0], eval_data=chat_data[1], output_dir=tmp_path / "again")
    first = load_file(result.output_dir / "adapter_model.safetensors")
    second = load_file(again.output_dir / "adapter_model.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(second[name], first[name], atol=1e-6, rtol=1e-5)


def test_generate_and_reopen(fitted):
    tuner, result = fitted
    one = tuner.generate("what is the color of the sky", max_new_tokens=4)
    many = tuner.generate([[{"role": "user", "content": "what is the color of the sky"}], "hi"], max_new_tokens=4)
    assert isinstance(one, str) and isinstance(many, list) and len(many) == 2
    assert many[0] == one
    assert Tuner.load(result.output_dir).generate("what is the color of the sky", max_new_tokens=4) == one



def test_non_empty_output_is_refused_before_loading(tiny_model_dir, chat_data, tmp_path, no_model_loading):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("precious")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        make_tuner(tiny_model_dir).fit(chat_data[0], output_dir=tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "precious"


def test_bad_data_is_refused_before_loading(tiny_model_dir, tmp_path, no_model_loading):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "no answer"}]}) + "\n")
    with pytest.raises(DataError, match="line 1"):
        make_tuner(tiny_model_dir).fit(bad, output_dir=tmp_path / "out")


def test_failed_training_leaves_nothing_at_the_output(tiny_model_dir, chat_data, tmp_path, monkeypatch):
    tuner = make_tuner(tiny_model_dir)

    def crash(job):
        (job.work_dir / "partial").write_text("x")
        raise RuntimeError("out of memory")

    monkeypatch.setattr(tuner.objective, "train", crash)
    with pytest.raises(RuntimeError, match="out of memory"):
        tuner.fit(chat_data[0], output_dir=tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_an_earlier_output(tiny_model_dir, chat_data, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    tuner = make_tuner(tiny_model_dir, training=TRAINING | {"max_steps": 2})
    result = tuner.fit(chat_data[0], output_dir=tmp_path / "out", overwrite=True)
    assert not (result.output_dir / "old.txt").exists()
    assert (result.output_dir / "adapter_model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_target_module_typo_names_the_real_layers(tiny_model_dir, chat_data, tmp_path):
    tuner = make_tuner(tiny_model_dir, adapter_config={"target_modules": ["q_projj", "v_proj"]})
    with pytest.raises(ConfigError) as caught:
        tuner.fit(chat_data[0], output_dir=tmp_path / "out")
    message = str(caught.value)
    assert "'q_projj' -> did you mean 'q_proj'?" in message and "gate_proj" in message
    assert not (tmp_path / "out").exists()


def test_packing_and_full_loss_train(tiny_model_dir, chat_data, tmp_path):
    tuner = make_tuner(tiny_model_dir, objective_config={"packing": True, "assistant_only_loss": False},
                       training=TRAINING | {"max_length": 128})
    result = tuner.fit(chat_data[0], output_dir=tmp_path / "packed")
    losses = [entry["loss"] for entry in result.log_history if "loss" in entry]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"training": {"learning_rate": 0}}, "training.learning_rate: Input should be greater than 0"),
        ({"training": {"epoch": 1}}, "training.epoch: Extra inputs are not permitted"),
        ({"adapter_config": {"r": -1}}, "adapter_config.r: Input should be greater than or equal to 1"),
        ({"objective_config": {"packing": "maybe"}}, "objective_config.packing"),
        ({"model": {"name": "x", "device": "tpu"}}, "model.device"),
    ],
)
def test_invalid_options_name_the_field(options, message):
    model = options.pop("model", "smollm2-135m")
    with pytest.raises(ConfigError) as caught:
        Tuner(model, **options)
    assert message in str(caught.value)
