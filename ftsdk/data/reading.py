"""Reading raw rows from data files and folders, one row at a time, each with its place in the file.

Files: JSONL, JSON, CSV (with a header), TXT (documents separated by blank lines, read as ``{"text": ...}``
rows), Parquet and Arrow (``.arrow``: an Arrow IPC file or stream, as ``datasets`` writes them). A folder is
every such file inside it, in name order (a ``datasets`` ``save_to_disk`` folder: its Arrow files). Every
format but ``.json`` streams: memory is bounded by the largest row (Parquet/Arrow: a batch), not the file.

Text must be UTF-8 (a UTF-8 byte-order mark is dropped); UTF-16 and UTF-32 files with a byte-order mark are
read as such. What cannot be read as text, rows nested deeper than :data:`MAX_DEPTH` and strings holding lone
surrogates (which no tokenizer can encode) are refused with their line.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftsdk.plugin.errors import DataError

SUFFIXES = (".jsonl", ".json", ".csv", ".txt", ".parquet", ".arrow")
#: deepest nesting of lists and objects a row may have (chat rows need 3 or 4)
MAX_DEPTH = 32
#: longest CSV field, in characters (Python's default of 128 Ki is shorter than many documents)
CSV_FIELD_LIMIT = 64 * 2**20
_SURROGATE = re.compile("[\ud800-\udfff]")
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
#: a place in the data: a line (row, for JSON, Parquet and Arrow) of one file, or ``"file:line"`` in a folder
Place = int | str


@dataclass(frozen=True)
class Unreadable:
    """A row that could not be read, and why."""

    reason: str


def unit_of(path: str | Path) -> str:
    """What a place counts in a file: its lines, or its rows (JSON lists, Parquet, Arrow)."""
    return "row" if Path(path).suffix.lower() in (".json", ".parquet", ".arrow") else "line"


def describe(place: Place, unit: str) -> str:
    """``line 3`` for a file's place, ``part-1.jsonl:3`` for a folder's."""
    return place if isinstance(place, str) else f"{unit} {place}"


def iter_rows(path: str | Path) -> Iterator[tuple[Place, Any]]:
    """Yield ``(place, row)`` for every row of a file or folder; an unreadable row comes as :class:`Unreadable`.

    Problems that make the rest of a file unreadable (bad encoding, broken CSV quoting) raise DataError.
    """
    path = Path(path)
    if path.is_dir():
        yield from _iter_folder(path)
        return
    if not path.is_file():
        raise DataError(f"data file not found: {path}", hint="check the path (relative paths start at the cwd)")
    suffix = path.suffix.lower()
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".txt": _read_txt,
               ".parquet": _read_parquet, ".arrow": _read_arrow}
    if suffix not in readers:
        raise DataError(f"{path}: unsupported file type '{suffix}'", hint=f"use one of {', '.join(SUFFIXES)}")
    try:
        for place, row in readers[suffix](path):
            problem = None if isinstance(row, Unreadable) else check_value(row)
            yield place, Unreadable(problem) if problem else row
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_rows(path: str | Path) -> tuple[list[tuple[Place, Any]], list[str]]:
    """Every ``(place, row)`` of ``path`` in memory, and the problems of the rows that could not be read."""
    rows, problems = [], []
    unit = unit_of(path)
    for place, row in iter_rows(path):
        if isinstance(row, Unreadable):
            problems.append(f"{describe(place, unit)}: {row.reason}")
        else:
            rows.append((place, row))
    return rows, problems


def check_value(value: Any) -> str | None:
    """Why a parsed row cannot be used as text data (too deeply nested, a lone surrogate), or None."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            found = _SURROGATE.search(item)
            if found:
                return (f"holds a lone surrogate U+{ord(found.group()):04X} (half of a broken UTF-16 pair), "
                        "which is not text: no tokenizer can encode it")
        elif isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return None


# -- text ---------------------------------------------------------------------------------------------------


def _encoding(path: Path) -> str:
    with open(path, "rb") as handle:
        start = handle.read(4096)
    for bom, encoding in _BOMS:
        if start.startswith(bom):
            return encoding
    if b"\x00" in start:
        raise DataError(f"{path}: holds NUL bytes, so it is not UTF-8 text (UTF-16 without a byte-order mark, or "
                        "a binary file)", hint="save it as UTF-8")
    return "utf-8"


def _not_text(path: Path, number: int, encoding: str, exc: UnicodeDecodeError) -> DataError:
    byte = exc.object[exc.start : exc.start + 1].hex()
    return DataError(f"{path}: line {number} is not valid {encoding.upper()} (byte 0x{byte} at column "
                     f"{exc.start + 1})", hint="save the file as UTF-8 (for example: iconv -f LATIN1 -t UTF-8)")


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line, newline kept; undecodable bytes raise DataError naming the line."""
    encoding = _encoding(path)
    if encoding.startswith("utf-8"):
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if number == 1 and encoding == "utf-8-sig":
                    raw = raw[len(codecs.BOM_UTF8):]
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise _not_text(path, number, "utf-8", exc) from None
        return
    number = 0
    with open(path, encoding=encoding, newline="") as handle:
        try:
            for number, line in enumerate(handle, start=1):  # noqa: B007 -- the last number names the bad line
                yield number, line
        except UnicodeDecodeError as exc:
            raise _not_text(path, number + 1, encoding, exc) from None


def json_problem(exc: Exception) -> str:
    """A short reason for a failure of ``json.loads`` (bad syntax, nesting, an over-long integer)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg} at column {exc.colno})"
    if isinstance(exc, RecursionError):
        return f"not usable JSON (nested deeper than {MAX_DEPTH} levels)"
    if "digits" in str(exc):  # integers longer than sys.get_int_max_str_digits()
        return "not usable JSON (a number with more than 4,300 digits)"
    return f"not usable JSON ({str(exc)[:200]})"


def _read_jsonl(path: Path) -> Iterator[tuple[Place, Any]]:
    for number, line in text_lines(path):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (ValueError, RecursionError) as exc:
            value = Unreadable(json_problem(exc))
        yield number, value


def _read_json(path: Path) -> Iterator[tuple[Place, Any]]:
    text = "".join(line for _, line in text_lines(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{path}: {json_problem(exc)}") from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]} style files
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows", hint="or write one JSON object per line (.jsonl)")
    yield from enumerate(data, start=1)


@contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _read_csv(path: Path) -> Iterator[tuple[Place, Any]]:
    reader = csv.reader(line for _, line in text_lines(path))
    with _csv_field_limit(CSV_FIELD_LIMIT):
        try:
            header = next(reader, None)
            if header is None:
                return
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated:
                raise DataError(f"{path}: line 1: the header names column(s) {', '.join(map(repr, repeated))} "
                                "more than once", hint="give every column its own name")
            start = reader.line_num + 1
            for fields in reader:
                if fields and len(fields) != len(header):
                    yield start, Unreadable(
                        f"{len(fields)} fields, but the header has {len(header)} columns (a field that holds a "
                        "comma must be quoted: \"like, this\")")
                elif fields:
                    yield start, dict(zip(header, fields))
                start = reader.line_num + 1
        except csv.Error as exc:
            hint = f"fields may hold at most {CSV_FIELD_LIMIT:,} characters" if "field limit" in str(exc) else (
                "check the quoting around this line")
            raise DataError(f"{path}: line {reader.line_num}: not valid CSV ({exc})", hint=hint) from None


def _read_txt(path: Path) -> Iterator[tuple[Place, Any]]:
    """Documents separated by blank lines, each as ``{"text": ...}`` at its first line."""
    start, lines = 0, []
    for number, line in text_lines(path):
        if line.strip():
            start = start or number
            lines.append(line)
        elif lines:
            yield start, {"text": "".join(lines).rstrip("\r\n")}
            start, lines = 0, []
    if lines:
        yield start, {"text": "".join(lines).rstrip("\r\n")}


def _arrow_rows(path: Path, batches: Iterator[Any]) -> Iterator[tuple[Place, Any]]:
    number = 0
    for batch in batches:
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _read_parquet(path: Path) -> Iterator[tuple[Place, Any]]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        yield from _arrow_rows(path, pq.ParquetFile(path).iter_batches(batch_size=1024))
    except (pyarrow.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None


def _read_arrow(path: Path) -> Iterator[tuple[Place, Any]]:
    import pyarrow

    try:
        with pyarrow.memory_map(str(path)) as source:
            try:
                reader: Any = pyarrow.ipc.open_file(source)
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            except pyarrow.ArrowInvalid:  # the stream format, which datasets writes
                source.seek(0)
                batches = pyarrow.ipc.open_stream(source)
            yield from _arrow_rows(path, batches)
    except (pyarrow.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Arrow file ({exc})") from None


# -- folders ------------------------------------------------------------------------------------------------


def folder_files(folder: Path) -> list[Path]:
    """The data files of a folder, in name order: a ``save_to_disk`` folder's Arrow files, or every data file."""
    if (folder / "dataset_dict.json").is_file():
        raise DataError(f"{folder} is a datasets DatasetDict with several splits",
                        hint=f"give one split's folder (e.g. {folder / 'train'})")
    state = folder / "state.json"
    if state.is_file() and (folder / "dataset_info.json").is_file():  # datasets' save_to_disk
        try:
            names = [item["filename"] for item in json.loads(state.read_text(encoding="utf-8"))["_data_files"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{state}: not a datasets state file ({exc})") from None
        return [folder / name for name in names]
    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise DataError(f"{folder} holds no data files", hint=f"data files end in {', '.join(SUFFIXES)}")
    return files


def _iter_folder(folder: Path) -> Iterator[tuple[Place, Any]]:
    for path in folder_files(folder):
        name = path.relative_to(folder).as_posix()
        for place, row in iter_rows(path):
            yield f"{name}:{place}", row
