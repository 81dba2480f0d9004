"""A flow run through its deployment: a real `prefect server` on 127.0.0.1, a process work pool, a real
process worker, and the run's final state read back from the server's API."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 150.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"prefect server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"prefect server did not answer {url}/health in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # its own process group: the server's/worker's children too
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.network
def test_charlm_deployment_runs_on_process_worker(tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(port))
    server_log = tmp_path / "server.log"
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=open(server_log, "w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    worker = None
    try:
        wait_healthy(api, server, server_log)
        client_env = dict(env, PREFECT_API_URL=api, PREFECT_WORKER_QUERY_SECONDS="1",
                          PREFECT_RESULTS_PERSIST_BY_DEFAULT="true")
        text = tmp_path / "text.txt"
        text.write_text("the quick brown fox jumps over the lazy dog.\n" * 400)
        run_dir = tmp_path / "run"
        # Register and trigger from a separate process, as a user would (this test process keeps its own
        # Prefect settings for the other tests).
        script = f"""
import json, sys
from flows.deploy import register
from prefect.deployments import run_deployment
ids = register("topiceq-test", ["charlm"])
run = run_deployment("charlm/charlm", parameters={{"text": {str(text)!r}, "out": {str(run_dir)!r},
    "preset": "tiny", "max_steps": 4, "n_samples": 1, "sample_length": 20, "score_chars": 500}}, timeout=0)
print(json.dumps({{"deployment": ids["charlm"], "flow_run": str(run.id)}}))
"""
        out = subprocess.run([sys.executable, "-c", script], env=client_env, cwd=REPO, capture_output=True,
                             text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-3000:]
        import json

        flow_run_id = json.loads(out.stdout.strip().splitlines()[-1])["flow_run"]

        worker_log = tmp_path / "worker.log"
        worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "topiceq-test", "--type",
                                   "process"], env=client_env, cwd=REPO, stdout=open(worker_log, "w"),
                                  stderr=subprocess.STDOUT, start_new_session=True)

        # Read the run's state from the server's REST API until it is final.
        deadline = time.monotonic() + 300
        state = None
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{api}/flow_runs/{flow_run_id}", timeout=5) as resp:
                state = json.loads(resp.read())["state"]
            if state and state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(1.0)
        assert state is not None and state["type"] == "COMPLETED", (
            f"final state {state}\nworker log:\n{worker_log.read_text()[-4000:]}")
        assert (run_dir / "samples.txt").is_file()
        assert (run_dir / "model" / "best.pt").is_file()
    finally:
        if worker is not None:
            stop(worker)
        stop(server)
