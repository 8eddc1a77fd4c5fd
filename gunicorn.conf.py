"""gunicorn settings, taken from the gateway's own (GATEWAY_* env, GATEWAY_CONFIG file): see gateway/gunicorn_config.py.

The settings, providers, keys and store are checked here, once, in the master; a mistake stops the start
with one line and exit status 2. Command-line flags still win: gunicorn applies them after this file.
"""

from gateway.gunicorn_config import configure

globals().update(configure())
