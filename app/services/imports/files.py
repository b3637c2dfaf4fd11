"""Reading an import file (CSV or JSON lines) and validating it row by row, with a line
number and a stable code per refused row (never the submitted value)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import orjson
from pydantic import ValidationError

from app.errors import (
    RuleViolation,
    field_error,
)
from app.models.import_job import ImportFormat
from app.services.imports.kinds import MAX_ROWS, Kind, TooManyRows

# --- reading a file ------------------------------------------------------------------------
# A file is read lazily, row by row (the decoding too): it is checked once as a whole when it
# is submitted (header, encoding, row count), then read again chunk by chunk while it runs,
# so no more than one chunk of rows is ever held as Python objects, whatever the file's size.

Record = tuple[int, dict[str, Any] | None, list[dict[str, Any]] | None]  # line, fields, errors


def _file_error(code: str, detail: str) -> RuleViolation:
    return RuleViolation(detail, code=code)


def _text(content: bytes) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(content), encoding="utf-8-sig", newline="")


def _header(reader: Any, kind: Kind) -> list[str]:
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise _file_error("empty_file", "The file has no header row.") from None
    except csv.Error:
        raise _file_error("malformed_csv", "The header row is not valid CSV.") from None
    # Unknown columns are named by position, never by their text: a file without a header
    # row would otherwise have its first person's details echoed back.
    unknown = [i for i, h in enumerate(header, start=1) if h not in kind.columns]
    missing = [c for c in kind.required if c not in header]
    twice = sorted({h for h in header if header.count(h) > 1 and h in kind.columns})
    if unknown or missing or twice:
        raise RuleViolation(
            "The header row does not match the documented columns (see the template).",
            code="invalid_header",
            errors=[{"field": f"column {i}", "message": "unknown column",
                     "type": "unknown_column"} for i in unknown]
            + [{"field": c, "message": "missing column", "type": "missing_column"}
               for c in missing]
            + [{"field": c, "message": "column given twice", "type": "duplicate_column"}
               for c in twice])
    return header


def _csv_cells(content: bytes, kind: Kind) -> tuple[list[str], Iterator[tuple[int, list[str] | None]]]:
    """The header (checked now) and the data rows, lazily: (line, cells), or (line, None) for a
    row that is not valid CSV; blank lines are skipped."""
    reader = csv.reader(_text(content), strict=True)
    header = _header(reader, kind)

    def cells() -> Iterator[tuple[int, list[str] | None]]:
        start = reader.line_num + 1
        while True:
            try:
                row: list[str] | None = next(reader)
            except StopIteration:
                return
            except csv.Error:
                row = None
                yield start, None
            else:
                if row and "".join(row).strip():
                    yield start, row
            start = reader.line_num + 1

    return header, cells()


def _json_lines(content: bytes) -> Iterator[tuple[int, str]]:
    for n, line in enumerate(_text(content), start=1):
        if line.strip():
            yield n, line


def _decoding(rows: Iterator[Any]) -> Iterator[Any]:
    try:
        yield from rows
    except UnicodeDecodeError:
        raise _file_error("invalid_encoding", "The file is not UTF-8 text.") from None


def check(content: bytes, fmt: ImportFormat, kind: Kind) -> int:
    """The file as a whole, before anything runs: UTF-8, a header matching the kind (CSV), at
    most MAX_ROWS rows (413). Returns the number of rows. Nothing is kept but the count."""
    try:
        rows: Iterator[Any] = (_json_lines(content) if fmt == ImportFormat.jsonl
                               else _csv_cells(content, kind)[1])
    except UnicodeDecodeError:
        raise _file_error("invalid_encoding", "The file is not UTF-8 text.") from None
    n = 0
    for _ in _decoding(rows):
        n += 1
        if n > MAX_ROWS:
            raise TooManyRows(f"A file may hold at most {MAX_ROWS:,} rows.")
    return n


def records(content: bytes, fmt: ImportFormat, kind: Kind) -> Iterator[Record]:
    """Every row of a checked file, lazily: (line, fields, None), or (line, None, errors) for
    a row that cannot be read."""
    if fmt == ImportFormat.jsonl:
        for n, line in _decoding(_json_lines(content)):
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                value = None
            if not isinstance(value, dict):
                yield n, None, [{"line": n, "field": None, "code": "invalid_json",
                                 "message": "The line is not a JSON object."}]
                continue
            yield n, value, None
        return
    header, cells = _csv_cells(content, kind)
    for n, row in _decoding(cells):
        if row is None or len(row) != len(header):
            yield n, None, [{"line": n, "field": None, "code": "malformed_row",
                             "message": f"The row does not have {len(header)} cells."}]
            continue
        fields: dict[str, Any] = {}
        for name, cell in zip(header, row, strict=True):
            cell = cell.strip()
            if not cell:
                continue  # an empty cell leaves the field as it is
            fields[name] = ([v.strip() for v in cell.split(";") if v.strip()]
                            if name in kind.list_columns else cell)
        yield n, fields, None


_CODES = {"missing": "missing", "extra_forbidden": "unknown_field", "enum": "invalid_choice",
          "literal_error": "invalid_choice", "value_error": "invalid_row",
          "string_too_long": "invalid_format", "string_too_short": "invalid_format",
          "string_pattern_mismatch": "invalid_format", "too_long": "invalid_format",
          "too_short": "invalid_format", "uuid_parsing": "invalid_uuid",
          "uuid_type": "invalid_uuid"}


def _code(pydantic_type: str) -> str:
    if pydantic_type in _CODES:
        return _CODES[pydantic_type]
    for prefix, code in (("date", "invalid_date"), ("int", "invalid_number"),
                         ("float", "invalid_number"), ("greater_than", "invalid_number"),
                         ("less_than", "invalid_number"), ("bool", "invalid_boolean")):
        if pydantic_type.startswith(prefix):
            return code
    return "invalid_type" if pydantic_type.endswith("_type") else "invalid_value"


class Validator:
    """Each row through the kind's input model, chunk after chunk of one file; a key twice in
    the file is an error on the later line (the keys seen so far are kept: a few bytes a row).
    Errors never carry the submitted values."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.first: dict[tuple[str, str], int] = {}

    def chunk(self, rows: list[Record]) -> tuple[list[tuple[int, Any]],
                                                  dict[int, list[dict[str, Any]]]]:
        errors: dict[int, list[dict[str, Any]]] = {}
        valid: list[tuple[int, Any]] = []
        model = self.kind.row_model
        for n, fields, unreadable in rows:
            if fields is None:
                errors[n] = unreadable or []
                continue
            try:
                row = model.model_validate(fields)
            except ValidationError as exc:
                errors[n] = [{"line": n, "field": e["field"] if e["field"] != "body" else None,
                              "code": _code(e["type"]), "message": e["message"]}
                             for e in map(field_error, exc.errors(include_url=False,
                                                                  include_input=False))]
                continue
            key = self.kind.key(row)
            if key in self.first:
                errors[n] = [{"line": n, "field": "external_id", "code": "duplicate_row",
                              "message": f"The same external id is on line {self.first[key]}."}]
                continue
            self.first[key] = n
            valid.append((n, row))
        return valid, errors
