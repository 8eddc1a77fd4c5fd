"""Attempt: the targets in order, each with its retries; the first answer below 400 wins."""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import (
    GatewayError,
    RequestTimeout,
    StoreUnavailable,
    UpstreamTimeout,
)
from ..observe import Trace
from ..reply import Reply
from ..routing import Target, mark

if TYPE_CHECKING:
    from ..services import Services

log = logging.getLogger("gateway")


def attempt(
    svc: Services, targets: list[Target], call: Callable[[Target], Reply], trace: Trace
) -> tuple[Reply, Target]:
    """Call the targets in order, retrying each as its policy says; the first answer below 400 wins.

    Otherwise the last failure is the answer: a reply as the provider gave it, or the gateway's error.
    Response headers say which target answered and after how many retries.
    """
    settings = svc.settings
    for position, target in enumerate(targets):
        retries = 0
        trace.provider = target.provider.name
        trace.mode = "native" if target.provider.native else "emulated"
        trace.fallbacks = position
        while True:
            failure: GatewayError | None = None
            started = time.perf_counter()
            try:
                reply = call(target)
                status, retry_after = reply.status, reply.headers.get("Retry-After") or reply.headers.get("retry-after")
            except StoreUnavailable:
                # The provider answered; only the store failed. Another call (a retry, the next target)
                # would be paid for again and could not be recorded either.
                raise
            except GatewayError as err:
                if isinstance(err, UpstreamTimeout) and target.timeout is not None:
                    err = RequestTimeout(
                        f"The provider '{target.provider.name}' did not answer within the config's "
                        f"request_timeout of {int(target.timeout * 1000)} ms."
                    )
                failure, status, retry_after = err, err.status, err.headers.get("Retry-After")
            trace.upstream_ms = (time.perf_counter() - started) * 1000
            trace.retries = retries
            if status < 400:
                mark(reply.headers, target, retries)
                return reply, target
            if retries < target.attempts and status in target.retry_on:
                wait = _backoff(retries, retry_after, settings)
                if wait is not None:
                    log.info("retrying %s after %s in %.2fs", target.provider.name, status, wait)
                    time.sleep(wait)
                    retries += 1
                    continue
            break
        last = position == len(targets) - 1
        if last or not target.falls_back_on(status):
            if failure is not None:
                mark(failure.headers, target, retries)
                raise failure
            mark(reply.headers, target, retries)
            return reply, target
        log.info("falling back from %s after %s", target.provider.name, status)
    raise AssertionError("no targets")  # routing always yields at least one


def _backoff(retries: int, retry_after: str | None, settings: Any) -> float | None:
    """Seconds to wait before retry ``retries + 1``: exponential with full jitter, capped, and never less
    than the provider's Retry-After; None when that asks for longer than the gateway will wait.
    """
    wait = random.uniform(0, min(settings.retry_backoff_cap, settings.retry_backoff_base * 2**retries))
    if retry_after:
        asked = _retry_after_seconds(retry_after)
        if asked is not None:
            if asked > settings.retry_after_max:
                return None
            wait = max(wait, asked)
    return wait


def _retry_after_seconds(value: str) -> float | None:
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
