"""gunicorn settings, taken from the gateway's own (GATEWAY_* env, GATEWAY_CONFIG file).

Command-line flags still win: gunicorn applies them after this file.
"""

from gateway.config import Settings

_settings = Settings.load()

bind = _settings.bind
workers = _settings.workers
# Threaded workers: a slow stream holds one thread, not a whole process.
worker_class = "gthread"
threads = _settings.threads
timeout = _settings.worker_timeout
graceful_timeout = _settings.graceful_timeout
keepalive = 5
# One log line per request is the gateway's own job; gunicorn's access log would repeat it.
accesslog = None
errorlog = "-"
