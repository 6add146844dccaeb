"""gunicorn settings for alert24-adapter: gevent workers for an I/O-bound service, logs to stdout.

Used by `alert24-adapter serve` and, through the top-level gunicorn.conf.py, by a plain `gunicorn wsgi:app`.
Every value can be overridden on the command line or through the environment variables named below.
"""

import os

# Each webhook spends most of its time waiting on Alert24: gevent's worker serves each in a greenlet,
# so a worker holds as many as arrive, bounded by its CPU, not by a thread count. The standard library
# is patched here, at the top of the settings gunicorn reads before anything else of ours — in the
# master, before preload_app imports requests and urllib3 — so every socket, lock and thread-local of
# the adapter is gevent's. GUNICORN_WORKER_CLASS=gthread goes back to threads (and patches nothing).
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "").strip() or "gevent"
if worker_class == "gevent":
    from gevent import monkey

    monkey.patch_all()

import gc  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        sys.stderr.write(f"alert24-adapter: configuration error: {name} must be a whole number of at least 1\n")
        sys.exit(4)
    return int(value)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8080')}"
# One process per core serves every webhook that arrives; beyond 4 memory grows faster than capacity.
workers = _int("WEB_CONCURRENCY", max(2, min(_cpus(), 4)))
# Webhooks one gevent worker holds at once; what Alert24 sees is bounded apart, by ALERT24_CONCURRENCY.
worker_connections = _int("GUNICORN_WORKER_CONNECTIONS", 1000)
# Only for GUNICORN_WORKER_CLASS=gthread.
threads = _int("GUNICORN_THREADS", 8)
# The app is built once in the master: a bad configuration stops start-up before any worker
# is forked, and workers share the loaded code's memory.
preload_app = True
# Above WEBHOOK_TIME_BUDGET (at most 120 s), so a worker is never killed mid-delivery.
timeout = _int("GUNICORN_TIMEOUT", 130)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 20)
# Longer than nginx's upstream keepalive_timeout (60 s), so nginx always closes idle connections first.
keepalive = _int("GUNICORN_KEEPALIVE", 75)
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
# No runtime control socket: nothing here uses it, and it would write into $HOME.
control_socket_disable = True
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

# prometheus_client's multiprocess mode: every worker writes its own files into one directory,
# and a scrape sums them. The directory must be set before prometheus_client is imported, and
# start empty: files left by an earlier run would be counted again.
_owned_metrics_dir = None
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    for _name in os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]):
        if _name.endswith(".db"):
            os.unlink(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], _name))
else:
    _owned_metrics_dir = tempfile.mkdtemp(prefix="alert24-adapter-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _owned_metrics_dir


def when_ready(server):
    """Before the first fork: move the loaded app out of the garbage collector's sight, so collections in
    the workers neither scan it nor copy its memory pages (gc.freeze, as the gc docs advise for pre-fork)."""
    gc.freeze()


def on_reload(server):
    """SIGHUP: re-read the configuration file before new workers are forked from the master."""
    reload = getattr(server.app.wsgi(), "reload_config", None)
    if reload is not None:
        reload()


def post_worker_init(worker):
    """In each new worker: start the reconciler's loop (only the process holding the ledger's lock acts)."""
    start = getattr(worker.wsgi, "start_background", None)
    if start is not None:
        start()


def child_exit(server, worker):
    """Let the scrape stop counting a dead worker's live gauges."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _owned_metrics_dir:
        shutil.rmtree(_owned_metrics_dir, ignore_errors=True)
