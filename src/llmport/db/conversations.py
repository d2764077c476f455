"""``ConversationTables``: conversations and their items, in order.

Appending takes the positions with one ``UPDATE … RETURNING`` on the conversation's row,
which serialises concurrent appends on SQLite and PostgreSQL alike (two responses on one
conversation never get the same positions).
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import delete, select, update

from llmport.db.job_models import Conversation, ConversationItem
from llmport.db.jobs import now


def new_conversation_id() -> str:
    return f"conv_{secrets.token_hex(16)}"


class ConversationTables:
    def __init__(self, sessions: Any) -> None:
        self.sessions = sessions

    async def create(self, owner: str, metadata: dict[str, str] | None,
                     items: list[dict[str, Any]]) -> Conversation:
        row = Conversation(id=new_conversation_id(), owner=owner, created_at=now(),
                           meta=metadata, next_position=len(items))
        async with self.sessions.begin() as session:
            session.add(row)
            await session.flush()
            session.add_all(ConversationItem(conversation_id=row.id, position=index,
                                             item_id=item["id"], item=item)
                            for index, item in enumerate(items))
        return row

    async def get(self, owner: str, conversation_id: str) -> Conversation | None:
        async with self.sessions() as session:
            row = await session.get(Conversation, conversation_id)
        return row if row is not None and row.owner == owner else None

    async def set_metadata(self, owner: str, conversation_id: str,
                           metadata: dict[str, str] | None) -> Conversation | None:
        async with self.sessions.begin() as session:
            await session.execute(update(Conversation).where(
                Conversation.id == conversation_id, Conversation.owner == owner)
                .values(meta=metadata))
        return await self.get(owner, conversation_id)

    async def delete(self, owner: str, conversation_id: str) -> bool:
        async with self.sessions.begin() as session:
            owned = select(Conversation.id).where(Conversation.id == conversation_id,
                                                  Conversation.owner == owner)
            await session.execute(delete(ConversationItem).where(
                ConversationItem.conversation_id.in_(owned)))
            result = await session.execute(delete(Conversation).where(
                Conversation.id == conversation_id, Conversation.owner == owner))
        return bool(result.rowcount)

    async def append(self, owner: str, conversation_id: str,
                     items: list[dict[str, Any]]) -> bool:
        """Add ``items`` at the end; False when the conversation is not the owner's."""
        async with self.sessions.begin() as session:
            end = await session.scalar(
                update(Conversation).where(Conversation.id == conversation_id,
                                           Conversation.owner == owner)
                .values(next_position=Conversation.next_position + len(items))
                .returning(Conversation.next_position))
            if end is None:
                return False
            start = end - len(items)
            session.add_all(ConversationItem(conversation_id=conversation_id,
                                             position=start + index, item_id=item["id"],
                                             item=item) for index, item in enumerate(items))
        return True

    async def items(self, conversation_id: str) -> list[dict[str, Any]]:
        """The conversation's items, oldest first."""
        async with self.sessions() as session:
            rows = await session.scalars(
                select(ConversationItem.item)
                .where(ConversationItem.conversation_id == conversation_id)
                .order_by(ConversationItem.position))
            return list(rows.all())

    async def remove_item(self, conversation_id: str, item_id: str) -> bool:
        async with self.sessions.begin() as session:
            result = await session.execute(delete(ConversationItem).where(
                ConversationItem.conversation_id == conversation_id,
                ConversationItem.item_id == item_id))
        return bool(result.rowcount)
