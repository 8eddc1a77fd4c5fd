"""Prompt templates in the store: each prompt's versions, numbered from 1, with the store's bounded waits.

Prompts are the operator's (managed with the admin key), not a tenant's: no query names a tenant.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from .tables import prompts

if TYPE_CHECKING:
    from . import Store


_LATEST = sa.select(sa.func.max(prompts.c.version)).where(prompts.c.id == sa.bindparam("id"))
_VERSION = sa.select(prompts).where(prompts.c.id == sa.bindparam("id"), prompts.c.version == sa.bindparam("version"))
# Tries of an insert that another writer's new version beat to the same number.
_TRIES = 5


@dataclasses.dataclass(frozen=True)
class StoredPrompt:
    id: str
    version: int
    created_at: float
    body: dict  # {"instructions", "input", "variables"}


def _prompt(row: Any) -> StoredPrompt:
    return StoredPrompt(row.id, row.version, row.created_at, orjson.loads(row.body))


class PromptStore:
    """The prompt queries of a Store (``store.prompts``)."""

    def __init__(self, store: Store):
        self._store = store

    def create(self, prompt_id: str, body: dict) -> StoredPrompt:
        """A new prompt, version 1. A retry after a lost acknowledgement finds its own row: done, as asked."""
        prompt = StoredPrompt(prompt_id, 1, time.time(), body)

        def write(conn: sa.Connection) -> None:
            if conn.execute(_LATEST, {"id": prompt_id}).scalar() is None:
                conn.execute(prompts.insert(), _row(prompt))

        self._store.write_in("prompt_create", write)
        return prompt

    def add_version(self, prompt_id: str, body: dict) -> StoredPrompt | None:
        """The prompt's next version (its latest plus one); None when there is no such prompt.

        Two writers adding a version at once both read the same latest: the second insert breaks the primary
        key, and is tried again with the number after the first's.
        """

        def write(conn: sa.Connection) -> StoredPrompt | None:
            latest = conn.execute(_LATEST, {"id": prompt_id}).scalar()
            if latest is None:
                return None
            prompt = StoredPrompt(prompt_id, latest + 1, time.time(), body)
            conn.execute(prompts.insert(), _row(prompt))
            return prompt

        for attempt in range(_TRIES):
            try:
                return self._store.write_in("prompt_add_version", write)
            except IntegrityError:
                if attempt == _TRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def get(self, prompt_id: str, version: int | None = None) -> tuple[StoredPrompt | None, int | None]:
        """(the version asked for, or the latest when ``version`` is None; the latest version's number).

        Both are None when there is no such prompt; the first alone when it has no such version.
        """

        def read(conn: sa.Connection) -> tuple[Any, int | None]:
            latest = conn.execute(_LATEST, {"id": prompt_id}).scalar()
            if latest is None:
                return None, None
            row = conn.execute(_VERSION, {"id": prompt_id, "version": latest if version is None else version}).first()
            return row, latest

        row, latest = self._store.read_in("prompt_get", read)
        return (None if row is None else _prompt(row)), latest

    def latest(self, *, after: str | None = None, limit: int = 20) -> list[StoredPrompt]:
        """The latest version of each prompt whose id comes after ``after``, by id, at most ``limit``."""
        where = [prompts.c.id > after] if after is not None else []
        heads = (
            sa.select(prompts.c.id, sa.func.max(prompts.c.version).label("version"))
            .where(*where)
            .group_by(prompts.c.id)
            .order_by(prompts.c.id)
            .limit(limit)
            .subquery("heads")
        )
        query = (
            sa.select(prompts)
            .join(heads, sa.and_(prompts.c.id == heads.c.id, prompts.c.version == heads.c.version))
            .order_by(prompts.c.id)
        )
        rows = self._store.read_in("prompt_list", lambda conn: conn.execute(query).all())
        return [_prompt(row) for row in rows]

    def delete(self, prompt_id: str) -> bool:
        """Remove a prompt with all its versions; False when there is no such prompt."""

        def write(conn: sa.Connection) -> bool:
            return bool(conn.execute(prompts.delete().where(prompts.c.id == prompt_id)).rowcount)

        return self._store.write_in("prompt_delete", write)


def _row(prompt: StoredPrompt) -> dict:
    return {
        "id": prompt.id,
        "version": prompt.version,
        "created_at": prompt.created_at,
        "body": orjson.dumps(prompt.body).decode(),
    }
