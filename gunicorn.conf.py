"""gunicorn settings, taken from the gateway's own (GATEWAY_* env, GATEWAY_CONFIG file).

Command-line flags still win: gunicorn applies them after this file.
"""

import os
import shutil
import tempfile

from gateway.config import Settings, runtime_path

_settings = Settings.load()

bind = _settings.bind
# Chosen by measurement on 2 cores with ../shared/bench (README, "Benchmarks"), store on:
#   gevent 3 workers x 1000:  2,198 req/s at c=16, 0.79 ms CPU/req, 1,000 streams held, +4.3 ms first token
#   gthread 3 workers x 384:  1,708 req/s at c=16, 0.98 ms CPU/req, 1,000 streams asked, +246 ms first token
# A greenlet switch is cheaper than handing the GIL between hundreds of threads, and an open stream
# costs a greenlet, not an OS thread. More processes than cores keeps a core busy while one waits.
workers = _settings.workers or (os.cpu_count() or 1) + 1
worker_class = _settings.worker_class
threads = _settings.threads
worker_connections = _settings.worker_connections
timeout = _settings.worker_timeout
graceful_timeout = _settings.graceful_timeout
keepalive = 5
# gunicorn's default control socket is one path per user (~/.gunicorn/gunicorn.ctl): a second instance on
# the host replaced the first one's, and stopping it deleted it. This file is read by the master, so its
# pid names this instance.
if _settings.control_socket == "off":
    control_socket_disable = True
else:
    control_socket = _settings.control_socket or runtime_path(f"gateway-{os.getpid()}.ctl")
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
