"""Parquet and Arrow files, folders of files, and ``datasets`` sources (issue 14), with column renaming."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ftsdk.cli import main
from ftsdk.data.curate import check
from ftsdk.data.loading import load_dataset
from ftsdk.plugin.errors import DataError
from ftsdk.testing import write_jsonl
from ftsdk.training.recipe import Recipe
from tests.helpers import run_python

ROWS = [{"question": "color of the sky?", "answer": "blue"}, {"question": "color of grass?", "answer": "green"},
        {"question": "color of snow?", "answer": "white"}]
RENAME = {"question": "prompt", "answer": "completion"}
CHAT = [{"messages": [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}]}
        for r in ROWS]


def test_parquet_with_chat_rows_and_a_bad_row_by_number(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(CHAT), path, row_group_size=2)
    data = load_dataset(path)
    assert data.format == "chat" and data.lines == [1, 2, 3] and data.examples[2][1]["content"] == "white"
    bad = CHAT[:2] + [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]}]
    pq.write_table(pa.Table.from_pylist(bad), path)
    with pytest.raises(DataError, match="row 3: messages.1: the assistant reply is empty"):
        load_dataset(path)


@pytest.mark.parametrize("kind", ["file", "stream"])
def test_arrow_files_in_both_ipc_formats(tmp_path, kind):
    path = tmp_path / "d.arrow"
    table = pa.Table.from_pylist(ROWS)
    with pa.OSFile(str(path), "wb") as sink:
        writer = (pa.ipc.new_file if kind == "file" else pa.ipc.new_stream)(sink, table.schema)
        writer.write_table(table, max_chunksize=2)
        writer.close()
    data = load_dataset(path, columns=RENAME)
    assert data.format == "prompt_completion" and [e[1]["content"] for e in data.examples] == ["blue", "green", "white"]


def test_corrupt_parquet_and_arrow_are_refused(tmp_path):
    for name in ("d.parquet", "d.arrow"):
        (tmp_path / name).write_bytes(b"PAR1 not really")
        with pytest.raises(DataError, match="not a readable"):
            load_dataset(tmp_path / name)


def test_a_folder_reads_every_data_file_in_name_order(tmp_path):
    folder = tmp_path / "data"
    write_jsonl(folder / "b.jsonl", CHAT[1:])
    write_jsonl(folder / "a.jsonl", CHAT[:1])
    (folder / "more").mkdir()
    pq.write_table(pa.Table.from_pylist(CHAT), folder / "more" / "c.parquet")
    (folder / ".hidden.jsonl").write_text("not json\n")
    (folder / "notes.md").write_text("ignored")
    data = load_dataset(folder)
    assert data.lines == ["a.jsonl:1", "b.jsonl:1", "b.jsonl:2", "more/c.parquet:1", "more/c.parquet:2",
                          "more/c.parquet:3"]
    write_jsonl(folder / "b.jsonl", [CHAT[1], {"messages": []}])
    with pytest.raises(DataError, match=r"b.jsonl:2: messages: List should have at least 2 items"):
        load_dataset(folder)
    write_jsonl(folder / "b.jsonl", CHAT[1:2])
    report = check(folder)  # the fingerprint changes with any file
    assert report.rows == 5 and report.sha256 != data.sha256 and report.exact_duplicates


def test_a_save_to_disk_folder_is_read_as_its_arrow_files(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    data = load_dataset(tmp_path / "saved", columns=RENAME)
    assert data.format == "prompt_completion" and len(data.examples) == 3
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(DataError, match="DatasetDict with several splits"):
        load_dataset(tmp_path / "dict")
    assert load_dataset(tmp_path / "dict" / "train", columns=RENAME).format == "prompt_completion"


def test_unknown_columns_suggest_renaming(tmp_path):
    with pytest.raises(DataError, match="rename columns with `columns:"):
        load_dataset(write_jsonl(tmp_path / "d.jsonl", ROWS))


def build_datasets_cache(root, repo_id: str) -> dict[str, str]:
    """A ``datasets`` cache holding ``repo_id`` as ``load_dataset`` leaves it after a download; the offline env."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    files = {}
    for split, rows in (("train", ROWS[:2]), ("test", ROWS[2:])):
        files[split] = [str(root / f"{split}.parquet")]
        pq.write_table(pa.Table.from_pylist(rows), files[split][0])
    built = Parquet(cache_dir=str(root / "build"), dataset_name=repo_id.split("/")[1], hash="0" * 16, data_files=files)
    built.download_and_prepare()
    namespace, name = repo_id.split("/")
    shutil.copytree(built.cache_dir, root / "cache" / f"{namespace}___{name}" / "default" / "0.0.0" / ("0" * 16))
    return {"HF_DATASETS_CACHE": str(root / "cache"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(root / "home")}


def test_hub_ids_load_through_datasets_from_its_offline_cache(tmp_path):
    """The real ``datasets.load_dataset`` code path, served from a cache laid out as datasets writes it."""
    env = build_datasets_cache(tmp_path, "ftsdk-test/colors")
    code = (
        "import json\nfrom ftsdk.data.loading import load_dataset\nfrom ftsdk.plugin.errors import DataError\n"
        "rename = {'question': 'prompt', 'answer': 'completion'}\n"
        "train = load_dataset({'hub': 'ftsdk-test/colors'}, columns=rename)\n"
        "test = load_dataset({'hub': 'ftsdk-test/colors', 'split': 'test', 'streaming': True}, columns=rename)\n"
        "print(json.dumps([train.path, train.format, train.lines, test.path, test.examples]))\n"
        "for source in ({'hub': 'ftsdk-test/absent'}, {'hub': 'ftsdk-test/colors', 'split': 'validation'}):\n"
        "    try:\n        load_dataset(source)\n"
        "    except DataError as exc:\n        print(str(exc).splitlines()[0])\n"
        "from ftsdk.cli import main\n"
        "print(main(['data', 'check', 'hf:ftsdk-test/colors', '--hub-split', 'test', '--column', 'question=prompt',"
        " '--column', 'answer=completion', '--json']))\n"
    )
    result = run_python(code, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    train_path, fmt, places, test_path, examples = json.loads(lines[0])
    assert (train_path, fmt, places) == ("hf:ftsdk-test/colors@train", "prompt_completion", [1, 2])
    assert test_path == "hf:ftsdk-test/colors@test"
    assert examples == [[{"role": "user", "content": "color of snow?"}, {"role": "assistant", "content": "white"}]]
    assert lines[1].startswith("cannot load the data set hf:ftsdk-test/absent@train")
    assert lines[2].startswith("cannot load the data set hf:ftsdk-test/colors@validation")
    assert '"rows": 1' in result.stdout and lines[-1] == "0"


def test_recipes_take_sources_and_columns(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "data:\n  train: {hub: org/name, split: 'train[:100]', subset: en}\n  eval: val.parquet\n"
        "  columns: {question: prompt, answer: completion}\noutput_dir: out\n")
    recipe = Recipe.from_yaml(tmp_path / "r.yaml")
    assert recipe.data.train.hub == "org/name" and recipe.data.train.split == "train[:100]"
    assert recipe.data.eval == tmp_path / "val.parquet" and recipe.data.columns["answer"] == "completion"


def test_cli_checks_parquet_and_refuses_bad_column_options(tmp_path, capsys):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    assert main(["data", "check", str(path), "--column", "question=prompt", "--column", "answer=completion"]) == 0
    assert "3 rows, prompt_completion format" in capsys.readouterr().out
    assert main(["data", "check", str(path), "--column", "question"]) == 2
    assert main(["data", "check", str(path), "--hub-split", "test"]) == 2
    assert "--hub-split and --hub-subset apply to hf:" in capsys.readouterr().err
