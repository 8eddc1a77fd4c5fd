"""The pipeline: a request through named stages (resolve, attempt, finish), and the reads beside it.

Doors (the HTTP views, WebSocket mode, the background consumer) call these; nothing here names a door.
"""

from .counts import TOKEN_COUNT_HEADER, compact, input_tokens
from .create import create
from .reads import cancel, delete, input_items, models, retrieve

__all__ = [
    "TOKEN_COUNT_HEADER",
    "cancel",
    "compact",
    "create",
    "delete",
    "input_items",
    "input_tokens",
    "models",
    "retrieve",
]
