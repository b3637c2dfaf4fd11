"""Reading an import file (CSV or JSON lines) and validating it row by row, with a line
number and a stable code per refused row (never the submitted value)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
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

@dataclass
class Parsed:
    """Every row of a file: (line, fields) or (line, None) with its errors."""

    rows: list[tuple[int, dict[str, Any] | None]]
    errors: dict[int, list[dict[str, Any]]]


def _file_error(code: str, detail: str) -> RuleViolation:
    return RuleViolation(detail, code=code)


def parse(content: bytes, fmt: ImportFormat, kind: Kind) -> Parsed:
    """Splits a file into rows (raw fields), counting them first: more than 50,000 is a 413."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _file_error("invalid_encoding", "The file is not UTF-8 text.") from None
    parsed = Parsed([], {})
    if fmt == ImportFormat.jsonl:
        lines = [(n, ln) for n, ln in enumerate(text.split("\n"), start=1) if ln.strip()]
        _check_count(len(lines))
        for n, ln in lines:
            try:
                value = orjson.loads(ln)
            except orjson.JSONDecodeError:
                value = None
            if not isinstance(value, dict):
                parsed.rows.append((n, None))
                parsed.errors[n] = [{"line": n, "field": None, "code": "invalid_json",
                                     "message": "The line is not a JSON object."}]
                continue
            parsed.rows.append((n, value))
        return parsed
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
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
    raw: list[tuple[int, list[str] | None]] = []
    start = reader.line_num + 1
    while True:
        try:
            cells: list[str] | None = next(reader)
        except StopIteration:
            break
        except csv.Error:
            raw.append((start, None))
        else:
            if cells and "".join(cells).strip():  # blank lines are skipped
                raw.append((start, cells))
        start = reader.line_num + 1
        if len(raw) > MAX_ROWS:
            break
    _check_count(len(raw))
    for n, cells in raw:
        if cells is None or len(cells) != len(header):
            parsed.rows.append((n, None))
            parsed.errors[n] = [{"line": n, "field": None, "code": "malformed_row",
                                 "message": f"The row does not have {len(header)} cells."}]
            continue
        fields: dict[str, Any] = {}
        for name, cell in zip(header, cells, strict=True):
            cell = cell.strip()
            if not cell:
                continue  # an empty cell leaves the field as it is
            fields[name] = ([v.strip() for v in cell.split(";") if v.strip()]
                            if name in kind.list_columns else cell)
        parsed.rows.append((n, fields))
    return parsed


def _check_count(n: int) -> None:
    if n > MAX_ROWS:
        raise TooManyRows(f"A file may hold at most {MAX_ROWS:,} rows.")


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


def validate(parsed: Parsed, kind: Kind) -> tuple[list[tuple[int, Any]], dict[int, list[dict[str, Any]]]]:
    """Each row through the kind's input model; a key twice in one file is an error on the
    later line. Errors never carry the submitted values."""
    errors = dict(parsed.errors)
    valid: list[tuple[int, Any]] = []
    first: dict[tuple[str, str], int] = {}
    model = kind.row_model
    for n, fields in parsed.rows:
        if fields is None:
            continue
        try:
            row = model.model_validate(fields)
        except ValidationError as exc:
            errors[n] = [{"line": n, "field": e["field"] if e["field"] != "body" else None,
                          "code": _code(e["type"]), "message": e["message"]}
                         for e in map(field_error, exc.errors(include_url=False,
                                                              include_input=False))]
            continue
        key = kind.key(row)
        if key in first:
            errors[n] = [{"line": n, "field": "external_id", "code": "duplicate_row",
                          "message": f"The same external id is on line {first[key]}."}]
            continue
        first[key] = n
        valid.append((n, row))
    return valid, errors


