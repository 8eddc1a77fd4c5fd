"""gunicorn settings, taken from the gateway's own (GATEWAY_* env, GATEWAY_CONFIG file).

Command-line flags still win: gunicorn applies them after this file.
"""

import os
import shutil
import tempfile

from gateway.config import Settings

_settings = Settings.load()

bind = _settings.bind
# Measured on 2 cores with ../shared/bench (see README): 3 workers x 384 threads gave 1,185 req/s at
# c=16 against 901 for 2 x 512, and held 500 streams with +10 ms to first token against +55 ms.
# More processes means less contention for each one's GIL; threads are what hold open streams.
workers = _settings.workers or (os.cpu_count() or 1) + 1
# Threaded workers: a slow stream holds one thread, not a whole process.
worker_class = "gthread"
threads = _settings.threads
timeout = _settings.worker_timeout
graceful_timeout = _settings.graceful_timeout
keepalive = 5
# One log line per request is the gateway's own job; gunicorn's access log would repeat it.
accesslog = None
errorlog = "-"

# Metrics across workers: prometheus_client's multiprocess mode keeps each worker's values in files here.
# The variable must be set before a worker imports prometheus_client, so it is set in the master, now.
_metrics_dir = _settings.metrics_dir or tempfile.mkdtemp(prefix="gateway-metrics-")
_made_metrics_dir = not _settings.metrics_dir
if not _made_metrics_dir:
    # Files left by an earlier run would be counted again.
    for _name in os.listdir(_metrics_dir):
        os.unlink(os.path.join(_metrics_dir, _name))
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir


def child_exit(server, worker):
    """A worker is gone: drop its live gauges (open streams) so they are not summed in forever."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, _metrics_dir)


def on_exit(server):
    if _made_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
