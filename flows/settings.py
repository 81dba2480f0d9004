"""Prefect environment defaults for topiceq's flows, applied before Prefect is imported.

`make run` and `topiceq run` must work on a fresh machine with nothing to set up: Prefect's embedded
(ephemeral) server, no telemetry, a start-up timeout long enough for a busy 2-core machine, and Prefect's
home inside the project's git-ignored `data/` folder so runs leave nothing in the user's home directory.
`topiceq run` puts Prefect's home into its run folder (`RUNDIR/.prefect`): the embedded server keeps its
sqlite database there, and two runs at once on different folders must not share one database (two
servers migrating and writing one sqlite file is where Prefect itself answers "database is locked"); one run
per folder is guaranteed by flows.launch. Every value is a default: a variable already set in the
environment (e.g. PREFECT_API_URL pointing at a real `prefect server`, or a test's temporary PREFECT_HOME)
wins.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PREFECT_HOME = REPO_ROOT / "data" / "prefect-home"
RUN_PREFECT_HOME = ".prefect"  # a run folder's own Prefect home (topiceq run)

PREFECT_ENV_DEFAULTS: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # The embedded server starts in ~6-8 s on an idle 2-core machine; much more when it is shared.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # Tasks log to the terminal; the per-task "Finished in state Completed()" lines stay, that is progress.
    "PREFECT_LOGGING_LEVEL": "INFO",
    # Results of our tasks are small (paths, dicts); persisting them is what makes the cache work.
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
}


def apply_prefect_defaults(prefect_home: Path | None = None) -> dict[str, str]:
    """Set the Prefect environment defaults that are not set yet; returns the variables it set.

    Has an effect only before `prefect` is imported (Prefect reads its settings at import time), so it
    warns on stderr when called too late.
    """
    if "prefect" in sys.modules:
        print("topiceq: note: Prefect was imported before its settings were applied; "
              "environment defaults may not take effect", file=sys.stderr)
    applied: dict[str, str] = {}
    wanted = dict(PREFECT_ENV_DEFAULTS)
    wanted["PREFECT_HOME"] = str(prefect_home or DEFAULT_PREFECT_HOME)
    for name, value in wanted.items():
        if name not in os.environ:
            os.environ[name] = value
            applied[name] = value
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    return applied
