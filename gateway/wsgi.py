"""The WSGI app, importable wherever the gateway is installed: ``gateway.wsgi:app`` for any WSGI server;
under gunicorn, ``gunicorn -c python:gateway.gunicorn_conf gateway.wsgi:app``.
"""

from . import create_app

app = create_app()
