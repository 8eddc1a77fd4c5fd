"""The app-wide components, built once per app and reached through ``current_services()``."""

from __future__ import annotations

import dataclasses

from flask import Flask, current_app

from . import mock
from .auth import Authenticator
from .background.service import Background
from .compaction import Sealer
from .config import Settings
from .extensions.background import BackgroundSubmission
from .extensions.compaction import AutoCompaction, CompactionTrigger
from .extensions.limits import KeyLimits
from .extensions.mcp import McpTools
from .extensions.truncation import Truncation
from .extensions.warmup import WarmUp
from .limits import Limits, from_settings
from .observe import Observer
from .prompts import PromptLibrary, load_files
from .providers import Catalogue
from .routing import Router
from .spend import Prices, Spend
from .store import Store
from .upstream import Upstream

EXTENSION = "gateway"


@dataclasses.dataclass(frozen=True)
class Services:
    settings: Settings
    catalogue: Catalogue
    upstream: Upstream
    auth: Authenticator
    store: Store
    router: Router
    observer: Observer
    sealer: Sealer  # seals and opens the gateway's compaction items
    background: Background  # the task queue of background runs, and the streams that follow them
    prompts: PromptLibrary  # prompt templates: the prompt files' and the store's
    limits: Limits  # every key's limits and their counters (limits.py)
    spend: Spend  # the cost of each call to a provider, and its usage row
    # The pipeline's extensions, in the order it calls them (see extensions/__init__.py), and their hooks,
    # found once here rather than looked up on every request.
    extensions: tuple = ()
    befores: tuple = ()
    plans: tuple = ()
    arounds: tuple = ()


def init_app(app: Flask, settings: Settings) -> Services:
    observer = Observer(
        multiprocess_dir=settings.metrics_dir, log_prompts=settings.log_prompts, max_models=settings.metrics_max_models
    )
    # Nothing here reads the store: a worker starts while the database is down, answers what needs no
    # store, and reads its schema and secrets at their first use (store/__init__.py).
    store = Store(
        settings.store_url,
        write_timeout=settings.store_write_timeout,
        observe=observer.store_op,
        usage_lost=observer.rows_lost,
    )
    prices = Prices(settings.prices)
    prices.load()
    # Tenant digests must agree across workers and hosts and survive restarts: one salt, kept in the store.
    salt = settings.key_salt or (lambda: store.secret("key_salt"))
    catalogue = Catalogue(settings.providers, hosted_tools=settings.hosted_tools)
    # Truncation after compaction: compaction summarises first, and it leaves out only what the provider is
    # then sent. McpTools is the one ``around``: its loop calls the stage the others plug into.
    limits = from_settings(settings, store, observer.limits_unavailable)
    # KeyLimits first: a request over its limits is refused before it is queued, compacted or run; as the
    # outermost ``around``, its reply carries the key's x-ratelimit headers whatever ran inside.
    extensions = (
        # Only where limits are configured: a gateway without any pays nothing for them.
        *((KeyLimits(limits),) if limits.active else ()),
        BackgroundSubmission(),
        CompactionTrigger(),
        AutoCompaction(),
        WarmUp(),
        Truncation(),
        McpTools(settings),
    )
    svc = Services(
        settings=settings,
        catalogue=catalogue,
        upstream=Upstream(
            connect_timeout=settings.upstream_connect_timeout,
            read_timeout=settings.upstream_read_timeout,
            pool_size=settings.upstream_pool_size,
            concurrency=settings.worker_connections,
            trust_env=settings.upstream_trust_env,
            max_response_bytes=settings.max_body_bytes,
            local={mock.SCHEME: mock.answer},
        ),
        auth=Authenticator(
            settings.keys,
            allow_provider_keys=settings.allow_provider_keys,
            salt=salt,
            gateway_key_prefix=settings.gateway_key_prefix,
            admin_key=settings.admin_key,
        ),
        store=store,
        router=Router(catalogue, configs=settings.configs, custom_hosts=settings.custom_hosts),
        observer=observer,
        # One key for every worker and host sharing the store, kept with the data it protects.
        sealer=Sealer(lambda: store.secret("compaction_key")),
        background=Background(settings, store),
        # Read once here: a changed file is read again by the workers a reload (SIGHUP) starts.
        limits=limits,
        prompts=PromptLibrary(load_files(settings.prompt_files), store.prompts),
        spend=Spend(prices, store.usage, observer),
        extensions=extensions,
        befores=tuple(e.before for e in extensions if hasattr(e, "before")),
        plans=tuple(e.plan for e in extensions if hasattr(e, "plan")),
        # (wants, around): an extension wraps the attempt stage only of the creates it wants.
        arounds=tuple((e.wants, e.around) for e in extensions if hasattr(e, "around")),
    )
    app.extensions[EXTENSION] = svc
    return svc


def current_services() -> Services:
    return current_app.extensions[EXTENSION]
