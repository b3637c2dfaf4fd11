"""Bulk imports from a jail management system: CSV or JSON lines, up to 200,000 rows, read a
chunk at a time (files.records) so that one chunk of rows is held in memory, not the file's.

Each row goes through the same code as its single-record route (participants.ImportChanges for the
upsert by external id, keep_aparts.OrderChanges for orders by the JMS's order id): rows are
validated one by one, a chunk of rows is applied in one transaction with its audit rows,
events, cascades and the job's progress, so a crash loses at most the chunk in progress and
the job resumes after the last committed one. Invalid rows change nothing; an unchanged row
writes nothing at all.
"""

from app.services.imports.files import Validator, check, records
from app.services.imports.jobs import (
    CHANNEL,
    claim,
    get,
    list_,
    resume_stalled,
    run,
    run_claimed,
    submit,
    waiting,
)
from app.services.imports.kinds import (
    KINDS,
    MAX_ROWS,
    Kind,
    ParticipantImportRow,
    TooManyRows,
    template,
)

__all__ = ["CHANNEL", "KINDS", "MAX_ROWS", "Kind", "ParticipantImportRow", "TooManyRows",
           "Validator", "check", "claim", "get", "list_", "records", "resume_stalled", "run",
           "run_claimed", "submit", "template", "waiting"]
