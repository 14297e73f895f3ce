"""``ranker serve`` in production: this process becomes the gunicorn master (``api/gunicorn_conf.py``).

Before it does, the encoders' ONNX graphs are exported into the models directory when they are missing (the only
step that needs torch, :mod:`ranker.retrieval.onnx_models`): the workers then load them without importing torch
or transformers. The process then replaces itself with ``python -m gunicorn -c api/gunicorn_conf.py`` (``exec``:
same pid, so a supervisor's SIGTERM reaches the master, and nothing this command imported lives on in the
workers). The master starts the embedded Redis (no ``REDIS_URL``) and the learner beside the workers, and stops
them in order on SIGTERM or SIGINT. Settings travel as the ``RANKER_*`` variables every process reads
(:mod:`ranker.config`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

import api

GUNICORN_CONF = Path(api.__file__).resolve().parent / "gunicorn_conf.py"
ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")  # a worker per core: one compute thread each


def exec_gunicorn(
    *,
    host: str,
    port: int,
    data_dir: Path,
    redis_url: str | None,
    insecure: bool,
    temperature: float | None,
    learn: bool,
    maintain: bool = True,
    workers: int | None = None,
) -> None:
    """Export what the workers need, then become the gunicorn master (never returns)."""
    prepare_encoders(data_dir)
    env = dict(os.environ)
    env.update(
        RANKER_DATA_DIR=str(data_dir),
        RANKER_BIND=f"{host}:{port}",
        RANKER_LEARN="1" if learn else "0",
        RANKER_MAINTAIN="1" if maintain else "0",
        RANKER_INSECURE="1" if insecure else "0",
    )
    if workers is not None:
        env["RANKER_WORKERS"] = str(workers)
    if temperature is not None:
        env["RANKER_TEMPERATURE"] = repr(float(temperature))
    if redis_url:
        env["REDIS_URL"] = redis_url
    for name in ONE_THREAD:
        env.setdefault(name, "1")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF)], env)


def prepare_encoders(data_dir: Path) -> None:
    """Export the encoders' ONNX graphs for ``data_dir`` when they are not cached yet (torch, in this process only)."""
    from ranker.config import load_settings
    from ranker.retrieval.encoders import load_encoders, models_dir, planned_runtime
    from ranker.retrieval.engine import saved_encoder_spec

    settings = load_settings()
    spec = saved_encoder_spec(data_dir) or "default"
    planned = planned_runtime(spec, backend=settings.encoder_backend, cache_dir=models_dir(data_dir))
    if any("exported at first use" in runtime for runtime in planned.values()):
        click.echo(f"exporting the encoders to ONNX under {models_dir(data_dir)} (once)", err=True)
        logging.getLogger("ranker.retrieval").setLevel(logging.WARNING)
        load_encoders(spec, backend=settings.encoder_backend, cache_dir=models_dir(data_dir))
