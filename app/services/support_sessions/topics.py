"""The session topic vocabulary (coping, family, reentry planning...): read by anyone who
reads sessions, extended by admins."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import SessionTopic
from app.models.support_session import TopicCreate
from app.security.principal import Principal
from app.services.common import flush_unique
from app.services.support_sessions.tables import TOPICS
from app.services.writer import Writer


async def list_topics(*, session: AsyncSession) -> list[SessionTopic]:
    return list((await session.execute(select(SessionTopic).order_by(TOPICS.code))).scalars())


async def add_topic(*, session: AsyncSession, principal: Principal,
                    data: TopicCreate) -> SessionTopic:
    topic = SessionTopic(code=data.code, label=data.label)
    session.add(topic)
    await flush_unique(session, "This topic exists.", code="topic_exists")
    w = Writer(session, principal)
    w.audit("session_topic.create", "session_topic", topic.code)
    await w.commit()
    return topic
