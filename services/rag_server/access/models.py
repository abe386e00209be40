"""API key types, roles, and the Principal a request is made by."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rag_server.collections.models import CollectionRef
from rag_server.infra.scoped_pool import DbScope

Role = Literal["reader", "editor", "admin"]
# reader: search, chat, read and download; editor: + upload, delete, metadata; admin: + collections, keys.
ROLE_RANK: dict[str, int] = {"reader": 1, "editor": 2, "admin": 3}

KEY_PREFIX = "rag_"
KEY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$"
KeyName = Annotated[
    str,
    Field(
        pattern=KEY_NAME_PATTERN,
        max_length=100,
        description="Letters, digits, '_', '.', '@' and '-', starting with a letter or digit; up to 100.",
    ),
]


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: KeyName
    role: Role
    # None: every collection (admin keys always). Names or ids.
    collections: list[CollectionRef] | None = Field(default=None, min_length=1, max_length=100)

    @model_validator(mode="after")
    def _admins_reach_everything(self) -> CreateKey:
        # An admin limited to some collections could create an unlimited key.
        if self.role == "admin" and self.collections is not None:
            raise ValueError("an admin key reaches every collection: give no collections")
        return self


class UpdateKey(BaseModel):
    """A key's new access (PATCH /keys/{name}): its role, its collections (replacing the old set), or both."""

    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    # Names or ids, as CreateKey's. Left out: the key's own stay (an admin's: none, it reaches every
    # one); null: every collection, as a key created without any (`every_collection`).
    collections: list[CollectionRef] | None = Field(default=None, min_length=1, max_length=100)

    @property
    def every_collection(self) -> bool:
        return "collections" in self.model_fields_set and self.collections is None

    @model_validator(mode="after")
    def _something_and_admins_reach_everything(self) -> UpdateKey:
        if self.role is None and "collections" not in self.model_fields_set:
            raise ValueError("give a role, collections or both: nothing to change")
        if self.role == "admin" and self.collections is not None:
            raise ValueError("an admin key reaches every collection: give no collections")
        return self


class ApiKey(BaseModel):
    id: UUID
    name: str
    role: Role
    collections: list[str] | None = Field(description="Collection names; null: every collection")
    key_prefix: str = Field(description="The key's first characters, to tell keys apart")
    created_at: datetime
    last_used_at: datetime | None = Field(description="Updated at most once a minute")
    revoked_at: datetime | None


class CreatedKey(ApiKey):
    key: str = Field(description="The key itself: shown this once, only its hash is stored")


class KeyList(BaseModel):
    items: list[ApiKey]
    total: int = Field(description="Every key listed (active, or with revoked ones), not only this page")
    limit: int | None = Field(default=None, description="The page's size asked for (null: every key)")
    offset: int = 0


@dataclass(frozen=True)
class Principal:
    """Who a request is made by: an API key, or nobody when the API is open (no key exists, loopback)."""

    key_id: UUID | None
    name: str | None
    role: Role
    collections: tuple[UUID, ...] | None  # None: every collection

    def can(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    @property
    def scope(self) -> DbScope:
        return DbScope(collections=self.collections, role=self.role, key_id=self.key_id)


# Open mode (no key exists, bound to a loopback address): today's single-user behaviour.
OPEN = Principal(key_id=None, name=None, role="admin", collections=None)
