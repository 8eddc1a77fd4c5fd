"""The limits' minute-window counters in the store, where no Redis is configured (``gw_limits``)."""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .tables import limits

if TYPE_CHECKING:
    from . import Store

# One add in this many also removes the windows that have ended, so the table stays a few rows per key.
_SWEEP_EVERY = 500


class LimitStore:
    """The limit counters of a Store (``store.limits``)."""

    def __init__(self, store: Store):
        self._store = store

    def add(self, name: str, amount: int, expires: float) -> int:
        """The window's count after adding ``amount``: one atomic upsert, whichever host adds."""
        dialect = postgresql if self._store.engine.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(limits).values(name=name, count=amount, expires=expires)
        stmt = stmt.on_conflict_do_update(
            index_elements=[limits.c.name], set_={"count": limits.c.count + stmt.excluded.count}
        ).returning(limits.c.count)
        sweep = random.randrange(_SWEEP_EVERY) == 0

        def run() -> int:
            with self._store.engine.begin() as conn:
                count = conn.execute(stmt).scalar_one()
                if sweep:
                    conn.execute(sa.delete(limits).where(limits.c.expires < time.time()))
                return int(count)

        # No retries: a limit check waits on nothing longer than one try (limits_fail decides what then).
        return self._store.read("limits_add", run)
