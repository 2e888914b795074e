"""Experiment tracking read back for real: TensorBoard event files with tensorboard's reader, an MLflow SQLite
store through mlflow's client, W&B offline run files; a tracker not installed fails before loading."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import pytest

from ftsdk import ConfigError, Tuner
from ftsdk.training.tracking import flatten, tensorboard_dir

TRAINING = {"max_steps": 3, "learning_rate": 5e-3, "batch_size": 8, "logging_steps": 1, "eval_steps": 2, "seed": 7,
            "max_length": 64, "threads": 1}
ADAPTER = {"r": 4, "dropout": 0.0}


def fit(model_dir: Path, data: tuple[Path, Path], out: Path, trackers: list[str], **training) -> dict:
    tuner = Tuner(str(model_dir), adapter_config=ADAPTER, training=TRAINING | {"report_to": trackers} | training)
    result = tuner.fit(data[0], eval_data=data[1], output_dir=out)
    return result.manifest


def test_flatten_gives_dotted_scalar_keys():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": "[1, 2]", "d": None}


def test_tensorboard_events_read_back(tiny_model_dir, chat_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "runs" / "tb-run"
    manifest = fit(tiny_model_dir, chat_data, out, ["tensorboard"])
    logdir = tensorboard_dir(out, "tb-run")
    assert logdir == tmp_path / "runs" / "tensorboard" / "tb-run"
    events = EventAccumulator(str(logdir), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]
    assert [e.step for e in events.Scalars("eval/loss")] == [2, 3]
    assert "train/learning_rate" in scalars
    assert events.Scalars("final/eval_loss")[0].value == pytest.approx(manifest["metrics"]["eval_loss"])
    texts = events.Tags()["tensors"]
    assert {"args/text_summary", "ftsdk/report/text_summary", "ftsdk/manifest/text_summary"} <= set(texts)
    manifest_text = events.Tensors("ftsdk/manifest/text_summary")[0].tensor_proto.string_val[0].decode()
    assert manifest["data"]["train"]["sha256"] in manifest_text
    hparams = events.PluginTagToContent("hparams")  # the session's hyperparameters: ftsdk's resolved settings
    assert any(b"adapter.config.r" in content and b"data.train.sha256" in content for content in hparams.values())


def test_a_fresh_run_replaces_the_old_events_of_its_name(tiny_model_dir, chat_data, tmp_path):
    out = tmp_path / "again"
    fit(tiny_model_dir, chat_data, out, ["tensorboard"], max_steps=1)
    first = set(tensorboard_dir(out, "again").iterdir())
    Tuner(str(tiny_model_dir), adapter_config=ADAPTER,
          training=TRAINING | {"report_to": ["tensorboard"], "max_steps": 1}).fit(
        chat_data[0], eval_data=chat_data[1], output_dir=out, overwrite=True)
    assert not first & set(tensorboard_dir(out, "again").iterdir())


def test_mlflow_sqlite_store_holds_params_metrics_and_artifacts(tiny_model_dir, chat_data, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # a SQLite store keeps its artifacts in ./mlruns, MLflow's default
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "ftsdk-tests")
    mlflow.set_tracking_uri(uri)
    try:
        manifest = fit(tiny_model_dir, chat_data, tmp_path / "ml-run", ["mlflow"], run_name="named-run")
    finally:
        mlflow.set_tracking_uri(None)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("ftsdk-tests")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "named-run" and run.info.status == "FINISHED"
    params = run.data.params
    assert params["ftsdk.adapter.name"] == "lora" and params["ftsdk.adapter.config.r"] == "4"
    assert params["ftsdk.data.train.sha256"] == manifest["data"]["train"]["sha256"]
    assert params["learning_rate"] == "0.005"  # transformers' own TrainingArguments params are there too
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval_loss")] == [2, 3]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "report.md", "ftsdk.json"} <= artifacts
    downloaded = client.download_artifacts(run.info.run_id, "ftsdk.json", str(tmp_path / "dl"))
    assert json.loads(Path(downloaded).read_text())["metrics"] == manifest["metrics"]


def test_wandb_offline_run_writes_its_files(tiny_model_dir, chat_data, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "ftsdk-tests")
    manifest = fit(tiny_model_dir, chat_data, tmp_path / "wb-run", ["wandb"])
    [run_dir] = (tmp_path / "wandb").glob("offline-run-*")
    [log] = run_dir.glob("run-*.wandb")
    records = wandb_records(log)
    config = {item.key: item.value_json for r in records if r.HasField("config") for item in r.config.update}
    assert json.loads(config["ftsdk.data.train.sha256"]) == manifest["data"]["train"]["sha256"]
    assert json.loads(config["ftsdk.adapter.config.r"]) == 4
    assert [r.run.display_name for r in records if r.HasField("run")][0] == "wb-run"
    logged = [{i.key or "/".join(i.nested_key): i.value_json for i in r.history.item}
              for r in records if r.HasField("history")]
    assert [json.loads(h["train/global_step"]) for h in logged if "train/loss" in h] == [1, 2, 3]
    assert [json.loads(h["train/global_step"]) for h in logged if "eval/loss" in h] == [2, 3]
    artifacts = [r.artifact for r in records if r.HasField("artifact")]
    assert artifacts and {f.path for f in artifacts[-1].manifest.contents} >= {"report.html", "report.md",
                                                                              "ftsdk.json"}


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline W&B run file (LevelDB log framing: 32 KiB blocks, 7-byte headers)."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos = path.read_bytes(), 32768, 7  # after the file header ":W&B", magic, version
    records, pending = [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST fragment: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


@pytest.mark.parametrize("tracker", ["tensorboard", "mlflow", "wandb"])
def test_a_tracker_not_installed_fails_before_loading(tracker, tiny_model_dir, chat_data, tmp_path, monkeypatch,
                                                      no_model_loading):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == tracker else real(name, *a))
    tuner = Tuner(str(tiny_model_dir), training={"report_to": [tracker]})
    with pytest.raises(ConfigError) as caught:
        tuner.fit(chat_data[0], output_dir=tmp_path / "out")
    assert f"training.report_to names {tracker}, which is not installed" in str(caught.value)
    assert f'pip install "ftsdk[{tracker}]"' in str(caught.value)


def test_an_unknown_tracker_is_a_config_error():
    with pytest.raises(ConfigError, match="training.report_to.0: Input should be 'tensorboard', 'mlflow' or"):
        Tuner("smollm2-135m", training={"report_to": ["comet"]})
