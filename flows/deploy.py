"""Deployments of topiceq's flows on a Prefect server.

Two ways, both standard Prefect:

* **Work pool + process worker** (a shared server, runs on whichever machine runs the worker):

      prefect server start --host 127.0.0.1 --port 4200          # terminal 1 (or an existing server)
      export PREFECT_API_URL=http://127.0.0.1:4200/api
      python -m flows.deploy register --pool topiceq             # creates the process pool + deployments
      prefect worker start --pool topiceq --type process         # terminal 2: executes flow runs
      prefect deployment run charlm/charlm -p text=/path/to.txt -p out=/path/run

  The deployments point at this checkout (`from_source(REPO_ROOT)`): the worker's machine needs the
  same checkout at the same path (a shared disk), or register from a git URL instead.

* **serve** (one long-running process that both holds the deployments and executes their runs):

      python -m flows.deploy serve

Flow runs started through a deployment keep Prefect's default result storage (the server side's
PREFECT_HOME/storage) instead of the run folder's; cache keys include the output paths, so runs into
different folders never share results.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# deployment name -> entrypoint (path relative to the repository root : flow function)
ENTRYPOINTS: dict[str, str] = {
    "charlm": "flows/charlm.py:charlm_flow",
    "equations": "flows/equations.py:equations_flow",
}
DEFAULT_POOL = "topiceq"


def ensure_process_pool(name: str = DEFAULT_POOL) -> str:
    """Create the process work pool `name` unless it exists; returns its name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(work_pool=WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            pass
    return name


def register(pool: str = DEFAULT_POOL, names: list[str] | None = None, *, source: str | None = None,
             parameters: dict[str, dict[str, Any]] | None = None) -> dict[str, str]:
    """Create (or update) one deployment per flow in the process work pool; returns {name: deployment id}.

    `source` is where the worker gets the code: this checkout by default, or a git URL.
    `parameters` gives default parameters per deployment name.
    """
    from prefect import flow as prefect_flow

    ensure_process_pool(pool)
    ids: dict[str, str] = {}
    for name in names or list(ENTRYPOINTS):
        if name not in ENTRYPOINTS:
            raise ValueError(f"unknown flow {name!r}: choose from {', '.join(ENTRYPOINTS)}")
        remote = prefect_flow.from_source(source=source or str(REPO_ROOT), entrypoint=ENTRYPOINTS[name])
        deployment_id = remote.deploy(name=name, work_pool_name=pool, build=False, push=False,
                                      parameters=(parameters or {}).get(name), print_next_steps=False,
                                      ignore_warnings=True, tags=["topiceq"])
        ids[name] = str(deployment_id)
    return ids


def serve(names: list[str] | None = None) -> None:
    """Serve the flows' deployments from this process (blocks; Ctrl-C stops it)."""
    from prefect import serve as prefect_serve

    from flows.charlm import charlm_flow
    from flows.equations import equations_flow

    flows = {"charlm": charlm_flow, "equations": equations_flow}
    prefect_serve(*[flows[n].to_deployment(name=n, tags=["topiceq"]) for n in (names or list(flows))])


def main(argv: list[str] | None = None) -> int:
    from flows.settings import apply_prefect_defaults

    apply_prefect_defaults()
    parser = argparse.ArgumentParser(prog="python -m flows.deploy", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    reg = sub.add_parser("register", help="create a process work pool and the deployments in it")
    reg.add_argument("--pool", default=DEFAULT_POOL)
    reg.add_argument("--source", help="git URL or folder holding the code (default: this checkout)")
    reg.add_argument("flows", nargs="*", help=f"flows to deploy: {', '.join(ENTRYPOINTS)} (default: all)")
    srv = sub.add_parser("serve", help="serve the deployments from this process")
    srv.add_argument("flows", nargs="*", help="flows to serve (default: all)")
    args = parser.parse_args(argv)
    if args.command == "register":
        for name, deployment_id in register(args.pool, args.flows or None, source=args.source).items():
            print(f"deployment {name}/{name}: {deployment_id} (pool {args.pool}); start a worker with "
                  f"`prefect worker start --pool {args.pool} --type process`")
    else:
        serve(args.flows or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
