"""The operator's surface, ``/v1/gateway/``: every route under it asks for the admin key (``admin_key``).

Features add their endpoints as a blueprint of their own, registered here under this one (prompt templates:
``prompts.py``; the usage report: ``usage.py``); the admin check runs before each of their views, so none can
forget it.
"""

from __future__ import annotations

from flask import request

from ..services import current_services
from .prompts import bp as prompts_bp
from .usage import bp as usage_bp
from .v1 import V1Blueprint

bp = V1Blueprint("admin", __name__, url_prefix="/v1/gateway")
bp.register_blueprint(prompts_bp)
bp.register_blueprint(usage_bp)


@bp.before_request
def _admin_only() -> None:
    """404 while no admin key is configured, 401 without the right one (see auth.check_admin)."""
    current_services().auth.check_admin(request.headers)
