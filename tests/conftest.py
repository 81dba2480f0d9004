"""Shared fixtures. Prefect is kept local and quiet; data paths point at ../shared when it exists."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("DO_NOT_TRACK", "1")
# A temporary PREFECT_HOME for the whole session, set before anything imports prefect.
if "PREFECT_HOME" not in os.environ or not os.environ.get("TOPICEQ_KEEP_PREFECT_HOME"):
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="topiceq-prefect-home-")

# The compile cache (and anything else under XDG_CACHE_HOME) starts empty for every test session, so a
# verdict cached on this machine by an earlier run can never make a test pass.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="topiceq-cache-")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
ARXIV = SHARED / "arxiv"
TEXT = SHARED / "text"


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # torch missing is a setup error that other tests report
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def shared_arxiv() -> Path:
    if not ARXIV.is_dir():
        pytest.skip("../shared/data/arxiv is not present")
    return ARXIV


@pytest.fixture(scope="session")
def shared_text() -> Path:
    if not TEXT.is_dir():
        pytest.skip("../shared/data/text is not present")
    return TEXT


@pytest.fixture(scope="session")
def pdflatex() -> str:
    path = shutil.which("pdflatex")
    if path is None:
        pytest.fail("pdflatex is missing: run `make test`, which installs TeX Live")
    return path


@pytest.fixture
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread avoids OpenMP spin contention."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
