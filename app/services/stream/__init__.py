"""The live stream (GET /v1/stream): the caller's visible events pushed as Server-Sent Events.

hub.py: one Hub per process (woken by NOTIFY or Writer.COMMITTED; one query per group of
subscribers with the same walls; bounded queues); live.py: one stream (replay after
Last-Event-ID, then live, heartbeats that check the caller again); tickets.py: single-use
tickets for browsers; service.py: Streams, what the app builds and the lifespan runs.
"""

from app.services.stream.hub import Hub
from app.services.stream.live import SCOPE, Caller
from app.services.stream.service import Streams

__all__ = ["SCOPE", "Caller", "Hub", "Streams"]
