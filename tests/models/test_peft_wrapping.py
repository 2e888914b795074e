"""Wrapping a model with PEFT imports GPT-QModel only for a model whose layers GPT-QModel made."""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import pytest

from ftsdk.models.peft_wrapping import uses_gptqmodel, without_unused_backends
from tests.helpers import run_python

needs_gptqmodel = pytest.mark.skipif(importlib.util.find_spec("gptqmodel") is None, reason="GPT-QModel not installed")


@pytest.mark.parametrize(("quantization", "expected"), [
    (None, False),
    ({"quant_method": "bitsandbytes"}, False),
    ({"quant_method": "gptq"}, True),
    (SimpleNamespace(quant_method="awq"), True),
])
def test_only_gptq_and_awq_models_use_gptqmodel(quantization, expected):
    model = SimpleNamespace(config=SimpleNamespace(quantization_config=quantization))
    assert uses_gptqmodel(model) is expected


@needs_gptqmodel
def test_lora_training_and_reloading_never_import_gptqmodel(tiny_model_dir, tiny_data, tmp_path):
    code = f"""
import json, sys
from ftsdk import Tuner
tuner = Tuner({str(tiny_model_dir)!r}, adapter="lora", training={{"max_steps": 1, "batch_size": 2}})
tuner.fit({str(tiny_data("chat", count=4))!r}, output_dir={str(tmp_path / "out")!r})
Tuner.load({str(tmp_path / "out")!r})
print(json.dumps("gptqmodel" in sys.modules))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) is False


@needs_gptqmodel
def test_a_gptq_model_keeps_peft_asking_for_gptqmodel():
    import peft.import_utils
    import peft.tuners.lora.gptq as lora_gptq

    with without_unused_backends(SimpleNamespace(config=SimpleNamespace(quantization_config={"quant_method": "gptq"}))):
        assert lora_gptq.is_gptqmodel_available is peft.import_utils.is_gptqmodel_available
    with without_unused_backends(SimpleNamespace(config=SimpleNamespace())):
        assert lora_gptq.is_gptqmodel_available() is False
    assert lora_gptq.is_gptqmodel_available is peft.import_utils.is_gptqmodel_available


def test_a_loftq_adapter_is_refused_not_applied_to_the_full_precision_base(tmp_path):
    from ftsdk.models.peft_wrapping import load_adapter
    from ftsdk.plugin.errors import ModelLoadError

    (tmp_path / "adapter_config.json").write_text('{"peft_type": "LORA", "init_lora_weights": "loftq"}')
    with pytest.raises(ModelLoadError, match="LoftQ adapter"):
        load_adapter(SimpleNamespace(config=SimpleNamespace()), tmp_path)
