"""The query string of the usage report, ``GET /v1/gateway/usage``: its forms are checked in gateway/usage.py."""

from __future__ import annotations

from marshmallow import RAISE, Schema, validate
from marshmallow import fields as mfields


class UsageQuerySchema(Schema):
    """``since`` and ``until``: an age (``7d``), a date (``2025-06-01``, UTC) or an ISO 8601 date and time;
    ``group_by``: any of key, provider, model, day, comma-separated (default: all four).

    Unknown fields are refused: a typo must not give a report of something else without a word.
    """

    class Meta:
        unknown = RAISE

    since = mfields.String(load_default="7d", validate=validate.Length(min=1, max=64))
    until = mfields.String(validate=validate.Length(min=1, max=64))
    group_by = mfields.String(validate=validate.Length(min=1, max=64))
