"""Event types: one registry (app/event_types.py), read against the source, served as the
contract's EventType enum and `webhooks` section, and enforced where events are written."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.event_types import EVENTS
from app.main import create_app
from app.services.events import EVENT_TYPES, FAMILY_SCOPES
from app.services.writer import Writer

ROOT = Path(__file__).resolve().parent.parent / "app"
EMITTERS = {"emit", "_emit", "_event", "Event"}  # what writes an outbox event, by name
SHAPE = re.compile(r"([a-z_]+)\.[a-z_]+")


def _emitted() -> tuple[set[str], set[str]]:
    """Literal event types given to an emitter anywhere in app/, and f-string ones as regexes."""
    literal, patterns = set(), set()
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)
            if name not in EMITTERS:
                continue
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) \
                        and SHAPE.fullmatch(arg.value):
                    literal.add(arg.value)
                elif isinstance(arg, ast.JoinedStr):
                    patterns.add("".join(re.escape(str(v.value)) if isinstance(v, ast.Constant)
                                         else "[a-z_]+" for v in arg.values))
    return literal, patterns


def test_every_event_type_emitted_in_the_source_is_registered():
    literal, patterns = _emitted()
    assert len(literal) > 20
    assert literal <= set(EVENTS), sorted(literal - set(EVENTS))
    for pattern in patterns:
        assert any(re.fullmatch(pattern, t) for t in EVENTS), pattern
    assert EVENT_TYPES == tuple(EVENTS)
    for event, description in EVENTS.items():
        family = SHAPE.fullmatch(event)
        assert family and family.group(1) in FAMILY_SCOPES, event
        assert description.strip(), event


def test_a_type_computed_at_run_time_must_be_registered_too(factory):
    w = Writer(SimpleNamespace(info={}), None)  # type: ignore[arg-type]  # no database needed
    with pytest.raises(ValueError, match="unregistered event type"):
        w.emit("pairing.teleported", "pairing", factory.facility().id)
    w.emit("pairing.proposed", "pairing", factory.facility().id)


def test_the_contract_enumerates_event_types_and_describes_each_webhook(settings):
    spec = create_app(settings).openapi()
    assert spec["openapi"].startswith("3.1")
    enum = spec["components"]["schemas"]["EventType"]
    assert enum["enum"] == list(EVENTS)
    assert enum["x-enum-descriptions"] == list(EVENTS.values())
    assert list(spec["webhooks"]) == list(EVENTS)
    for event, item in spec["webhooks"].items():
        op = item["post"]
        assert op["description"] == EVENTS[event]
        payload = op["requestBody"]["content"]["application/json"]["schema"]["allOf"]
        assert payload[0] == {"$ref": "#/components/schemas/EventRead"}
        assert payload[1]["properties"]["type"] == {"const": event}
        assert {p["name"] for p in op["parameters"]} == {
            "webhook-id", "webhook-timestamp", "webhook-signature"}
    ids = [i["post"]["operationId"] for i in spec["webhooks"].values()]
    assert len(set(ids)) == len(ids)


def test_what_the_feed_serves_is_what_the_webhooks_section_describes(client, factory):
    f = factory.facility()
    factory.outbox_event("participant.created", facility=f)
    h = factory.headers(factory.api_client(["participants:read", "events:read"], [f]))
    items = client.get("/v1/events", headers=h).json()["items"]
    assert items and items[0]["type"] in EVENTS
    assert {"id", "entity_type", "facility_id", "network"} <= set(items[0]["data"])
