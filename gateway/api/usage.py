"""The usage report, ``GET /v1/gateway/usage``, under the admin key (admin.py registers it)."""

from __future__ import annotations

import orjson
from flask import Response, request

from .. import usage
from ..schemas import validate
from ..schemas.responses import query_dict
from ..schemas.usage import UsageQuerySchema
from ..services import current_services
from .v1 import V1Blueprint

bp = V1Blueprint("usage", __name__, url_prefix=None)

_query_schema = UsageQuerySchema()


@bp.get("/usage")
def report() -> Response:
    query = validate(_query_schema, query_dict(request.args))
    made = usage.report(current_services().store.usage, **query)
    return Response(orjson.dumps(usage.as_json(made)), status=200, mimetype="application/json")
