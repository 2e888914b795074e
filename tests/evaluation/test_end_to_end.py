"""Evaluation end to end on a tiny model: Tuner.evaluate, ftsdk eval, the forgetting check, GGUF, bad input."""

from __future__ import annotations

import json

import pytest
import yaml

from ftsdk.cli import main
from ftsdk.evaluation.run import evaluate
from ftsdk.plugin.errors import ConfigError, DataError
from ftsdk.testing.tiny import task_rows, write_jsonl

TRAINING = {"max_steps": 8, "learning_rate": 5e-3, "batch_size": 8, "logging_steps": 2, "seed": 3}
GENERATION = {"max_new_tokens": 4}
PROMPTS = ["what is the color of the apple", "what is the color of the sky", "what is the color of the snow",
           "what is the color of the lime"]


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    """A LoRA tuned for a few steps, compared with Tuner.evaluate (base, prompted base, tuned).

    The general set's answer key is the base model's own replies: the base passes every prompt,
    so the forgetting check must flag a tuned model that now answers differently.
    """
    from ftsdk.training.tuner import Tuner

    root = tmp_path_factory.mktemp("evaluation")
    train = write_jsonl(root / "train.jsonl", task_rows(48, seed=1))
    test = write_jsonl(root / "test.jsonl", task_rows(24, seed=2))
    tuner = Tuner(str(tiny_model_dir), training=TRAINING)
    answers = tuner.generate(PROMPTS, max_new_tokens=8)
    general = write_jsonl(root / "general.jsonl", [
        {"id": f"g{k}", "category": "colors", "prompt": p, "check": "exact", "answers": [a]}
        for k, (p, a) in enumerate(zip(PROMPTS, answers))
    ])
    tuner.fit(train, eval_data=test, output_dir=root / "lora")
    comparison = tuner.evaluate(test, prompts={"prompted": "Name the color in one word."}, generation=GENERATION,
                                forgetting={"file": general, "max_new_tokens": 8}, limit=8,
                                follow={"regex": "[a-z]+"})
    return {"root": root, "train": train, "test": test, "general": general, "tuner": tuner, "comparison": comparison}


def test_tuner_evaluate_compares_base_prompted_and_tuned(run):
    comparison = run["comparison"]
    assert [c.name for c in comparison.candidates] == ["base", "prompted", "tuned"]
    assert comparison.task == "labels" and comparison.baseline == "base"
    assert comparison.labels == sorted({r["messages"][-1]["content"] for r in task_rows(24, seed=2)})
    for result in comparison.candidates:
        m = result.metrics
        assert {"accuracy", "macro_f1", "invalid_rate", "constrained_accuracy", "constrained_macro_f1", "reply_perplexity",
                "conversation_perplexity", "follow_rate", "latency_s", "output_tokens"} <= set(m)
        assert len(result.examples) == 8 and m["latency_s"] > 0
        assert 1 < m["reply_perplexity"] and 1 < m["conversation_perplexity"]
        assert m["reply_perplexity"] != m["conversation_perplexity"]
        assert sum(map(sum, result.constrained.confusion)) == 8
        # a reply is counted right exactly when no failure mode was given to it
        assert m["accuracy"] == sum(e.failure is None or e.failure == "breaks the format rule"
                                    for e in result.examples) / 8
    tuned, base = comparison["tuned"], comparison["base"]
    assert tuned.metrics["reply_perplexity"] < base.metrics["reply_perplexity"]  # it trained on these replies
    assert comparison.delta("tuned", "reply_perplexity") == pytest.approx(tuned.metrics["reply_perplexity"]
                                                                         - base.metrics["reply_perplexity"])
    assert comparison["prompted"].system_prompt == "Name the color in one word."
    assert "general_accuracy" not in comparison["prompted"].metrics  # the check compares base and tuned only


def test_forgetting_flags_the_tuned_model_that_answers_differently(run):
    (check,) = run["comparison"].forgetting
    assert (check.base, check.tuned) == ("base", "tuned")
    assert check.base_score.accuracy == 1.0
    assert check.tuned_score.accuracy < 1.0 and check.forgot and "overall" in check.flagged


def test_report_written_inside_the_run_folder(run):
    folder = run["root"] / "lora" / "eval"
    assert run["comparison"].output_dir == folder
    html, md = (folder / "report.html").read_text(), (folder / "report.md").read_text()
    figures = sorted(p.name for p in (folder / "figures").iterdir())
    assert figures == ["confusion-base.png", "confusion-prompted.png", "confusion-tuned.png", "forgetting.png",
                       "loss-tuned.png", "metrics.png"]
    assert html.count("data:image/png;base64,") == len(figures) and 'src="figures' not in html
    for text in ("Δ tuned", "accuracy, likeliest label", "Forgetting check", "Where tuned still fails",
                 "Held-out data", "Manifest"):
        assert text in html and text in md
    assert all(f"](figures/{name})" in md for name in figures)
    manifest = json.loads((folder / "ftsdk.json").read_text())
    assert manifest["kind"] == "evaluation" and manifest["data"]["rows"] == 8
    results = json.loads((folder / "results.json").read_text())
    assert results["deltas"]["tuned"]["reply_perplexity"] == pytest.approx(
        run["comparison"].delta("tuned", "reply_perplexity"))
    for text in ("perplexity of the reference replies", "perplexity, whole conversation"):
        assert text in html and text in md


def test_training_run_writes_its_report(run):
    folder = run["root"] / "lora"
    html = (folder / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 1 and "Loss curves" in html
    assert "Data: train" in html and "Data: eval" in html and "tokens per row" in html and "ftsdk.json" in html
    assert "![train and eval loss per optimizer step](loss.png)" in (folder / "report.md").read_text()


def test_cli_eval_loads_each_candidate_and_agrees_with_the_live_tuner(run, tiny_model_dir, tmp_path, capsys):
    """The pool loads the base once, puts the adapter on it and takes it off again: same numbers as in memory."""
    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump({
        "data": str(run["test"]), "limit": 8, "perplexity": True,
        "candidates": [{"name": "tuned", "source": str(run["root"] / "lora"), "generation": GENERATION},
                       {"name": "base", "source": str(tiny_model_dir), "generation": GENERATION}],
        "baseline": "base", "output_dir": "out",
    }))
    assert main(["eval", str(config), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.split("\nreport: ")[0])
    live = run["comparison"]
    for name in ("tuned", "base"):
        loaded = next(c for c in printed["candidates"] if c["name"] == name)
        assert [e["reply"] for e in loaded["examples"]] == [e.reply for e in live[name].examples]
        for metric in ("accuracy", "constrained_accuracy", "reply_perplexity", "conversation_perplexity"):
            assert loaded["metrics"][metric] == pytest.approx(live[name].metrics[metric], rel=1e-4)
    assert (tmp_path / "out" / "report.html").is_file()  # relative to the YAML file


def test_cli_flags_few_shot_and_text_task(run, tiny_model_dir, tmp_path, capsys):
    args = ["eval", "--data", str(run["test"]), "--candidate", f"base={tiny_model_dir}", "--candidate",
            f"prompted={tiny_model_dir}", "--system-prompt", "prompted=Say the color.", "--task", "text",
            "--max-new-tokens", "3", "--limit", "4"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ROUGE-L (F)" in out and "exact match" in out and "Δ prompted" in out and "likeliest" not in out
    few = evaluate({"data": run["test"], "limit": 2, "perplexity": False, "candidates": [
        {"name": "shots", "source": str(tiny_model_dir), "few_shot": {"file": run["train"], "count": 3},
         "generation": GENERATION}]})
    assert few["shots"].few_shot == 3 and few.output_dir is None


def test_gguf_candidate_matches_transformers(run, tiny_model_dir, tmp_path):
    pytest.importorskip("llama_cpp")
    from ftsdk.gguf.convert import convert_model

    gguf = tmp_path / "tiny.gguf"
    convert_model(tiny_model_dir, gguf, "f32")
    comparison = evaluate({"data": run["test"], "limit": 4, "candidates": [
        {"name": "hf", "source": str(tiny_model_dir), "generation": GENERATION},
        {"name": "gguf", "source": str(gguf), "generation": GENERATION}]})
    hf, ll = comparison["hf"], comparison["gguf"]
    assert ll.kind == "gguf" and ll.runtime == "llama.cpp (f16 KV cache)"  # llama-cpp-python's default cache
    for metric in ("reply_perplexity", "conversation_perplexity"):  # same token ids, same split
        assert ll.metrics[metric] == pytest.approx(hf.metrics[metric], rel=1e-3)
    assert [e.choice for e in ll.examples] == [e.choice for e in hf.examples]


# -- bad input fails before any model loads -------------------------------------------------------------------------


def _config(test, **changes):
    if changes.get("data") == "text.jsonl":  # free-text replies: no label set
        rows = [{"prompt": f"say {n} words", "completion": " ".join(["word"] * n)} for n in range(1, 9)]
        changes["data"] = str(write_jsonl(test.parent / "text.jsonl", rows))
    return {"data": str(test), "candidates": [{"name": "base", "source": "model"}], **changes}


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"data": "missing.jsonl"}, DataError, "data file not found"),
    ({"candidates": [{"name": "x", "source": "m", "kind": "lora"}]}, ConfigError, "candidates.0.kind"),
    ({"candidates": []}, ConfigError, "candidates"),
    ({"task": "labels", "data": "text.jsonl"}, ConfigError, "does not look like a label task"),
    ({"task": "text", "constrained": True}, ConfigError, "constrained scoring needs a label task"),
    ({"labels": ["red"]}, ConfigError, "are not in labels"),
    ({"baseline": "nobody"}, ConfigError, "'nobody' is not a candidate"),
    ({"candidates": [{"name": "a", "source": "nowhere", "kind": "adapter"}]}, ConfigError, "does not exist"),
    ({"follow": {"regex": "("}}, ConfigError, "regex does not compile"),
    ({"forgetting": {"enabled": True, "file": "none.jsonl"}}, DataError, "general set not found"),
])
def test_bad_input_is_refused_before_loading(run, no_model_loading, changes, error, message):
    with pytest.raises(error, match=message):
        evaluate(_config(run["test"], **changes))


def test_cli_bad_input_exits_2(run, no_model_loading, capsys):
    assert main(["eval", "--data", str(run["test"])]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert main(["eval", "--data", str(run["test"]), "--candidate", "a=m", "--system-prompt", "b=hi"]) == 2
    assert "no candidate" in capsys.readouterr().err
    assert main(["eval", "--candidate", "oops"]) == 2
