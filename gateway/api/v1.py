"""The blueprint of every ``/v1`` surface: paths are matched as sent, so every answer is JSON."""

from __future__ import annotations

from typing import Any

from flask import Blueprint


class V1Blueprint(Blueprint):
    """A Blueprint under ``/v1`` whose rules never merge slashes.

    Werkzeug answers ``/v1/responses//input_items`` with an HTML 308 to the merged path, and Flask returns
    such redirects without passing them to the error handlers; an API client wants the JSON error shape
    (here: 404, unknown path) and a POST must not be bounced.
    """

    def __init__(self, name: str, import_name: str, url_prefix: str | None = "/v1"):
        super().__init__(name, import_name, url_prefix=url_prefix)

    def add_url_rule(self, rule: str, endpoint: str | None = None, view_func: Any = None, **options: Any) -> None:
        options.setdefault("merge_slashes", False)
        super().add_url_rule(rule, endpoint, view_func, **options)
