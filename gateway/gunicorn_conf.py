"""gunicorn's settings from the gateway's own, for an install without the source tree:

    gunicorn -c python:gateway.gunicorn_conf gateway.wsgi:app

The same as the clone's gunicorn.conf.py. gunicorn imports a ``python:`` settings module once, so a reload
(SIGHUP) re-reads the gateway's settings in ``on_reload`` (keys, providers, configs: what the new workers
use); gunicorn's own (bind, workers) are read at start only this way.
"""

from .gunicorn_config import configure, reconfigure

globals().update(configure())
on_reload = reconfigure
