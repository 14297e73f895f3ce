"""The ``ranker`` command line. Every command takes ``--help``.

Commands that touch stored state share ``--data-dir`` (default: the
``RANKER_DATA_DIR`` environment variable, else ``./data``): the catalog's
item store and indexes live in ``DIR/index``; later parts keep policies and
the embedded Redis there too.
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ranker")
def main() -> None:
    """Adaptive multimodal ranking for e-commerce search."""


# each module adds its commands to ``main``
from ranker.cli import ab, catalog, history, maintain, policy, serve, sim, train  # noqa: E402, F401
