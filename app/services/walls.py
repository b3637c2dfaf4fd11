"""The machinery of the walls (`app.services.scoping` defines every aggregate's wall with it):
a wall is the caller's shape (which clauses apply) and values; its clauses come bound to the
values for ad-hoc queries, or with placeholders for the prebuilt hot statements (built once per
shape and cached), from one registered definition per aggregate (`defines`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import false
from sqlalchemy.sql.elements import BindParameter

from app.security.principal import Principal

NOTHING = "nothing"  # the shape of a caller who sees no record of the aggregate


class Binder:
    """Bound parameters for one statement: with the caller's values, or placeholders. One
    parameter object per name, so a name used twice is one parameter."""

    def __init__(self, values: Mapping[str, Any] | None) -> None:
        self.values = values
        self.made: dict[str, BindParameter[Any]] = {}

    def __call__(self, name: str, **kw: Any) -> BindParameter[Any]:
        if name not in self.made:
            self.made[name] = (BindParameter(name, **kw) if self.values is None
                               else BindParameter(name, self.values[name], **kw))
        return self.made[name]


Clauses = Callable[[frozenset[str], Binder], list[Any]]
CLAUSES: dict[str, Clauses] = {}


def defines(aggregate: str) -> Callable[[Clauses], Clauses]:
    def register(fn: Clauses) -> Clauses:
        CLAUSES[aggregate] = fn
        return fn
    return register


@dataclass(frozen=True)
class Wall:
    aggregate: str
    shape: frozenset[str]
    params: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def nothing(self) -> bool:
        return NOTHING in self.shape

    def clauses(self, *, bound: bool = True) -> list[Any]:
        if self.nothing:
            return [false()]
        if not bound:
            return list(unbound(self.aggregate, self.shape))
        return CLAUSES[self.aggregate](self.shape, Binder(self.params))


@lru_cache(maxsize=256)
def unbound(aggregate: str, shape: frozenset[str]) -> tuple[Any, ...]:
    return tuple(CLAUSES[aggregate](shape, Binder(None)))


def nothing_of(aggregate: str) -> Wall:
    return Wall(aggregate, frozenset({NOTHING}))


def caller_parts(principal: Principal, *, networks: bool = True,
            me: str | None = None) -> tuple[set[str], dict[str, Any]] | None:
    """The parts every wall shares: the caller's networks, facilities and (for a peer
    supporter) own participant id; None when the caller can see nothing."""
    shape: set[str] = set()
    params: dict[str, Any] = {}
    if networks:
        if not principal.networks:
            return None
        shape.add("nets")
        params["nets"] = sorted(n.value for n in principal.networks)
    if not principal.all_facilities:
        if not principal.facility_ids:
            return None
        shape.add("facs")
        params["facs"] = sorted(principal.facility_ids)
    if me and principal.is_peer:
        if principal.participant_id is None:
            return None
        shape.add(me)
        params["me"] = principal.participant_id
    return shape, params


def wall_of(aggregate: str, found: tuple[set[str], dict[str, Any]] | None) -> Wall:
    if found is None:
        return nothing_of(aggregate)
    return Wall(aggregate, frozenset(found[0]), found[1])


def facs(shape: frozenset[str], b: Binder, column: Any) -> list[Any]:
    return [column.in_(b("facs", expanding=True))] if "facs" in shape else []
