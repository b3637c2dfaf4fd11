"""Participants: create, read, list, change, upsert by external id, merge, archive.

use_cases.py   get, read, read_by_external_id, list_, create, update, upsert_by_external_id, archive
merge.py       merge a duplicate record into the surviving one
decision.py    the rules, pure: a new record's values; what a body changes on an existing
               one (columns, external ids, events, cascades)
changes.py     Changes: what one transaction does to participants (loads, creates, decided
               upserts, new rows inserted together, cascades run once per kind)
appliers.py    RouteChanges (ORM objects, for a route) and ImportChanges (plain rows written
               back per chunk, for an import)
locations.py   facilities and housing units a body refers to, loaded and resolved
"""

from app.services.participants.appliers import ImportChanges, RouteChanges
from app.services.participants.changes import Changes
from app.services.participants.locations import Locations
from app.services.participants.merge import merge
from app.services.participants.use_cases import (
    ListFilters,
    archive,
    create,
    get,
    list_,
    read,
    read_by_external_id,
    update,
    upsert_by_external_id,
)

__all__ = ["Changes", "ImportChanges", "ListFilters", "Locations", "RouteChanges", "archive",
           "create", "get", "list_", "merge", "read",
           "read_by_external_id", "update", "upsert_by_external_id"]
