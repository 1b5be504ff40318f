"""Streaming readers for CSV, JSON-array and JSON-lines exports.

Each reader yields `(position, row)` one row at a time, so memory stays constant however large
the file is. Column names are normalized (`normalize_key`) so that the NYC CSV header
`Unique Key`, its JSON twin and the Socrata field `unique_key` all become `unique_key`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import ijson

from hub.core.errors import InvalidInput

_NON_WORD = re.compile(r"[^0-9a-z]+")

# Largest CSV field accepted, in characters (Python's default limit is 131,072).
CSV_FIELD_LIMIT = 1_000_000


class FileFormatError(InvalidInput):
    """The file as a whole cannot be read in the requested format."""

    code = "invalid_file"


@lru_cache(maxsize=4096)
def normalize_key(name: str) -> str:
    """Lower-case `name` and join its words with underscores (`Status.Notes` -> `status_notes`)."""
    return _NON_WORD.sub("_", name.strip().lower()).strip("_")


def normalize_row(row: dict[str, Any]) -> dict[str, Any]:
    return {normalize_key(key): value for key, value in row.items() if key is not None}


class ExportFile:
    """An export opened in binary mode; `bytes_read` feeds the progress bar."""

    def __init__(self, path: Path):
        self.path = path
        self.size = path.stat().st_size
        self._raw: BinaryIO = path.open("rb")

    @property
    def bytes_read(self) -> int:
        # A text wrapper closes the file when it is garbage-collected after the last row.
        if self._raw.closed:
            return self.size
        return self._raw.tell()

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> ExportFile:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def csv_rows(self, label: str) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
        """Return the normalized header and an iterator of `(line, row)`.

        `line` is the 1-based line where the record starts; a quoted field may span lines.
        """
        csv.field_size_limit(CSV_FIELD_LIMIT)
        text = io.TextIOWrapper(self._raw, encoding="utf-8-sig", newline="")
        reader = csv.reader(text)
        try:
            header = next(reader)
        except StopIteration:
            raise FileFormatError(f"{self.path.name} is empty; expected {label}") from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise FileFormatError(
                f"{self.path.name} is not a UTF-8 CSV file ({exc.__class__.__name__}); "
                f"expected {label}"
            ) from None
        keys = [normalize_key(name) for name in header]
        return keys, self._csv_records(reader, keys, label)

    def _csv_records(
        self, reader: Any, keys: list[str], label: str
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        start = reader.line_num + 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except (UnicodeDecodeError, csv.Error) as exc:
                raise FileFormatError(
                    f"{self.path.name} line {start}: unreadable CSV ({exc}); expected {label}"
                ) from None
            line = start
            start = reader.line_num + 1
            if not values or values == [""]:
                continue
            # Extra values beyond the header go under "", which no format reads.
            yield line, dict(zip(keys, values, strict=False)) | _missing(keys, values)

    def _first_content(self) -> bytes:
        """Return the first bytes past a UTF-8 BOM and white space, or b"" for a blank file."""
        with self.path.open("rb") as handle:
            head = handle.read(64).removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
            while not head:
                chunk = handle.read(65536)
                if not chunk:
                    return b""
                head = chunk.lstrip(b" \t\r\n")
        return head

    def json_items(self, label: str) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield `(record number, row)` for each object of a top-level JSON array."""
        number = 0
        try:
            for item in ijson.items(self._raw, "item", use_float=True):
                number += 1
                if not isinstance(item, dict):
                    raise FileFormatError(
                        f"{self.path.name} record {number} is not a JSON object; expected {label}"
                    )
                yield number, normalize_row(item)
        except ijson.JSONError as exc:
            if number == 0:
                head = self._first_content()
                if not head:
                    raise FileFormatError(
                        f"{self.path.name} is empty (no JSON content); expected {label}. "
                        "Check that the export finished writing the file"
                    ) from None
                if not head.startswith(b"["):
                    raise FileFormatError(
                        f"{self.path.name} does not start with a JSON array; expected {label}. "
                        "For a CSV file, pick one of the CSV formats that `hub import --help` "
                        "lists"
                    ) from None
            # The parser's message spans several lines with a drawing of the position.
            reason = str(exc).strip().splitlines()[0].rstrip(".")
            raise FileFormatError(
                f"{self.path.name} is not a valid JSON array after record {number} ({reason}); "
                f"expected {label}"
            ) from None
        except UnicodeDecodeError:
            raise FileFormatError(f"{self.path.name} is not UTF-8 text; expected {label}") from None
        if number == 0:
            raise FileFormatError(
                f"{self.path.name} contains no records (an empty file, an empty array or not a "
                f"top-level JSON array); expected {label}"
            )

    def json_lines(self, label: str) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield `(line, row)` for each JSON object of a JSON-lines file."""

        text = io.TextIOWrapper(self._raw, encoding="utf-8-sig")
        seen = 0
        line = 0
        try:
            for line, raw in enumerate(text, start=1):
                if not raw.strip():
                    continue
                try:
                    item = json.loads(raw)
                except ValueError as exc:
                    raise FileFormatError(
                        f"{self.path.name} line {line} is not a JSON object ({exc.msg}); "
                        f"expected {label}"
                    ) from None
                if not isinstance(item, dict):
                    raise FileFormatError(
                        f"{self.path.name} line {line} is not a JSON object; expected {label}"
                    )
                seen += 1
                yield line, normalize_row(item)
        except UnicodeDecodeError:
            raise FileFormatError(
                f"{self.path.name} line {line + 1} is not UTF-8 text; expected {label}"
            ) from None
        if seen == 0:
            raise FileFormatError(f"{self.path.name} is empty; expected {label}")


def _missing(keys: list[str], values: list[str]) -> dict[str, Any]:
    # A short row (fewer values than header columns) reads the absent columns as None, which
    # the formats report as missing rather than as empty strings.
    if len(values) >= len(keys):
        return {}
    return {key: None for key in keys[len(values) :]}
