"""Whether this process runs its requests as gevent greenlets (gunicorn's gevent worker patches threading)."""

from __future__ import annotations

import sys


def active() -> bool:
    """True when gevent has patched threading: a thread-local is then per greenlet, a lock is a greenlet's,
    and gevent's own primitives are the cheap ones.
    """
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")
