"""WSGI entry point in the clone: ``gunicorn -c gunicorn.conf.py wsgi:app`` (installed: ``gateway.wsgi:app``)."""

from gateway.wsgi import app

__all__ = ["app"]
