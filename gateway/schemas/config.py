"""The ``x-portkey-config`` routing config: strategy, targets (nested), retry, request_timeout, overrides."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, validate, validates_schema
from marshmallow import fields as mfields

from . import fields as f

_STATUS = f.Integer(validate=validate.Range(min=100, max=599))


class RetrySchema(Schema):
    class Meta:
        unknown = RAISE

    attempts = f.Integer(validate=validate.Range(min=0, max=10))
    on_status_codes = mfields.List(_STATUS)


class StrategySchema(Schema):
    class Meta:
        unknown = RAISE

    mode = f.String(required=True, validate=validate.OneOf(["single", "fallback", "loadbalance"]))
    on_status_codes = mfields.List(_STATUS)


class TargetSchema(Schema):
    """One target, or a nested strategy with targets of its own.

    Unknown keys are refused: a misspelt ``overide_params`` must not route silently with the defaults.
    """

    class Meta:
        unknown = RAISE

    provider = f.String()
    api_key = f.String()
    custom_host = f.String()
    # Bounded so that any sum of weights stays a finite number for random.choices.
    weight = f.Number(validate=validate.Range(min=0, max=1_000_000))
    override_params = f.Object()
    retry = mfields.Nested(RetrySchema)
    request_timeout = f.Integer(validate=validate.Range(min=1))
    strategy = mfields.Nested(StrategySchema)
    targets = mfields.List(mfields.Nested(lambda: TargetSchema()), validate=validate.Length(min=1))

    @validates_schema
    def _leaf_or_group(self, data: dict, **kwargs: Any) -> None:
        if "targets" in data and "provider" in data:
            raise ValidationError("a target has either a provider or targets, not both.", "targets")
        if "targets" in data and "strategy" not in data:
            raise ValidationError("Missing data for required field.", "strategy")


class ConfigSchema(TargetSchema):
    """The top level is a target too: ``{"provider": …}`` alone, or a strategy with targets."""
