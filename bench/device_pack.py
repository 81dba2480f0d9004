"""Run the whole `topiceq run` flow on the GPU machine in ONE device call: wheels and corpus packed here.

The device machine has Python 3.12 with torch, numpy, scipy, scikit-learn, matplotlib, httpx, rich ... but not
Prefect's server stack, pydantic, gensim or pylatexenc, reaches no package registry, and receives one copy of
the working tree of at most 64 MiB. So, here:

  python bench/device_pack.py prepare    # -> data/device-pack/{wheels/*.whl, corpus.tar.xz}; prints what travels
  python bench/device_pack.py rehearse   # a Python 3.12 venv holding only what the device has, + the wheels
  python bench/device_pack.py trace      # which distributions the flow imports (re-derives CARRY after changes)

and there (device `run`, carry ["data/device-pack"], timeout_s 590):

  python3 bench/device_pack.py device --preset gpu     # install, unpack, `topiceq run`, results into $OUT

Which wheels: CARRY, the distributions that `topiceq run` imports with the thread task runner and Prefect's
embedded (ephemeral) server and that the device lacks (DEVICE_HAS, the device image's package list). `trace` runs
the tiny flow here under an import hook and checks CARRY against what was imported; `rehearse` proves the set
is enough in a venv that holds nothing else. Left out although Prefect names them as requirements: the Dask
family (loaded only through Prefect's collection entry points when installed: `--task-runner dask` does not
work there), amplitude-analytics (analytics are off), griffecli, jsonpointer and rfc3339-validator (optional
imports of jsonschema), h2 (HTTP/2 is off), docker, etc.: `rehearse --without DIST...` shows what each costs.
Wheels are trimmed (test folders, C/Cython sources, Prefect's UI bundles, which the ephemeral server never
mounts) and re-zipped with a RECORD that lists what is left: gensim's wheel alone is 28 MB, 23 of it test data.
The versions are this venv's (the ones the test suite runs with). The install is --no-deps, so `device` then
checks every requirement of a carried wheel against the device's own packages and, where one is out of range,
installs the spare carried for it (SPARES: small pure-Python ones such as typing-extensions, which pydantic
needs at >= 4.16). All of it sits in data/ (git-ignored by the project's .gitignore), so any checkout can
carry it as it is: `carry` names ignored paths, and .git/info/exclude would be one more step per clone.
One file for one job (getting the flow onto the device), so that the device needs nothing else.
"""
from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK = REPO / "data" / "device-pack"               # what travels (name it in `carry`)
DOWNLOADS = REPO / "data" / "device-pack-downloads"  # untrimmed wheels, kept here only
DEMO = REPO.parent / "shared" / "data" / "arxiv" / "demo"
SAMPLE = REPO.parent / "shared" / "data" / "arxiv" / "sample"
LIMIT = 64 * 2**20  # the working tree that travels
SITE = "/tmp/site"  # where the device installs the wheels (PYTHONPATH=/tmp/site:$PWD)

# What the flow imports and the device lacks (proved by `trace` and `rehearse`), by who needs it.
CARRY = [
    # Prefect and the embedded server it starts (FastAPI on uvicorn, SQLite through SQLAlchemy, docket on an
    # in-memory Redis, Fernet from cryptography for its secrets)
    "prefect", "fastapi", "starlette", "uvicorn", "websockets", "asgi-lifespan", "sqlalchemy", "aiosqlite",
    "greenlet", "alembic", "mako", "asyncpg", "pydocket", "redis", "burner-redis", "py-key-value-aio", "beartype",
    "cronsim", "uncalled-for", "opentelemetry-api", "orjson", "pendulum", "whenever", "pytz", "coolname",
    "python-slugify", "toml", "cachetools", "griffelib", "graphviz", "exceptiongroup", "jsonschema",
    "jsonschema-specifications", "referencing", "rpds-py", "jinja2-humanize-extension", "cryptography", "cffi",
    "sniffio",
    # tzdata: imported (zoneinfo's list of zones); also the zone data should the device lack /usr/share/zoneinfo
    "tzdata",
    # pydantic (Prefect's settings and schemas)
    "pydantic", "pydantic-core", "pydantic-settings", "pydantic-extra-types", "annotated-types",
    "typing-inspection", "python-dotenv",
    # the project's own needs
    "gensim", "smart-open", "pylatexenc",
]
# The device image's Python packages (its own list, read 2026-11-17); `trace` counts these as present.
DEVICE_HAS = set("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx humanize
huggingface-hub hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib
jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite
lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec
patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())
# `rehearse`: stand-ins for the device's own copies of what the flow touches (numpy at the device's version;
# uvloop, simplejson and xxhash because uvicorn, requests and redis use them when present).
DEVICE_STANDINS = """numpy==2.5.2 scipy==1.17.1 scikit-learn==1.9.1 matplotlib==3.11.2 tqdm==4.70.1 requests==2.34.2
jinja2==3.1.6 httpx==0.29.0 anyio==4.16.0 click==8.5.1 rich==15.0.0 pyyaml==6.0.4 cloudpickle==3.1.3 colorama
fsspec humanize attrs typing-extensions==4.16.0 pathspec prometheus-client pluggy toolz wrapt zipp msgpack psutil
sortedcontainers annotated-doc packaging six pytest uvloop simplejson xxhash""".split()
# Only Dask's runner needs these; Prefect imports prefect-dask through its entry point when it is installed.
DASK_ONLY = {"prefect-dask", "dask", "distributed", "zict", "tblib", "locket", "partd", "tornado", "lazy-importer",
             "importlib-metadata"}
# Imported here, yet the rehearsal passes without them (`rehearse --without ...`): optional imports.
OPTIONAL = {"amplitude-analytics", "griffecli", "jsonpointer", "rfc3339-validator", "h2", "hpack", "hyperframe"}
# Pure-Python packages the device has, whose versions the carried wheels constrain (pydantic 2.14 needs
# typing-extensions >= 4.16, prefect python-dateutil < 3, ...): carried as spares in PACK/spares and installed
# there only where the device's own copy misses the range (`check-requirements --fix-from`).
SPARES = ["typing-extensions", "anyio", "jinja2", "httpcore", "cloudpickle", "rich", "prometheus-client",
          "annotated-doc", "humanize", "click", "packaging", "python-dateutil"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]
SOURCE_SUFFIXES = (".c", ".cpp", ".h", ".hpp", ".pyx", ".pxd", ".pxi")
DROP_PREFIXES = ("prefect/server/ui/", "prefect/server/ui-v2/")  # served only by a non-ephemeral server


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


# ----------------------------------------------------------------------------------------------- prepare
def trimmed(name: str) -> bool:
    parts = name.split("/")
    return (any(p in ("test", "tests") for p in parts[1:-1]) or name.endswith(SOURCE_SUFFIXES)
            or name.startswith(DROP_PREFIXES))


def trim_wheel(src: Path, dst: Path) -> tuple[int, int]:
    """Re-zip wheel SRC as DST without `trimmed` members; RECORD lists (hash, size) of what is left."""
    with zipfile.ZipFile(src) as zin:
        record = next(n for n in zin.namelist() if n.endswith(".dist-info/RECORD"))
        rows = []
        tmp = dst.with_suffix(".part")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
            for info in zin.infolist():
                if info.filename == record or trimmed(info.filename):
                    continue
                data = zin.read(info)
                zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
                if not info.is_dir():
                    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                    rows.append([info.filename, f"sha256={digest}", str(len(data))])
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerows(rows + [[record, "", ""]])
            zout.writestr(record, text.getvalue())
    tmp.replace(dst)
    return src.stat().st_size, dst.stat().st_size


def download(names: list[str]) -> dict[str, Path]:
    """The wheel of each distribution at this venv's version (cached in DOWNLOADS)."""
    from importlib import metadata

    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            sys.exit(f"device_pack: {name} is not installed in {sys.executable}: install the project first")
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.12", "--implementation", "cp", "-d", str(DOWNLOADS)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    subprocess.run(cmd + pins, check=True)
    found = {}
    for pin in pins:
        name, version = pin.split("==")
        stem = re.sub(r"[-_.]+", "_", name).lower() + "-" + version + "-"
        hits = [w for w in DOWNLOADS.glob("*.whl") if w.name.lower().startswith(stem)]
        if len(hits) != 1:
            sys.exit(f"device_pack: expected one wheel for {pin} in {DOWNLOADS}, found {[h.name for h in hits]}")
        found[name] = hits[0]
    return found


def travelling_bytes() -> tuple[int, int]:
    """(tracked + untracked-not-ignored files, the carried pack) in bytes, as the device tool counts them."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.split(b"\0")
    tree = sum((REPO / os.fsdecode(p)).stat().st_size for p in set(listed) if p and (REPO / os.fsdecode(p)).is_file())
    pack = sum(f.stat().st_size for f in PACK.rglob("*") if f.is_file())
    return tree, pack


def prepare(args: argparse.Namespace) -> int:
    wheels = PACK / "wheels"
    if wheels.exists():
        shutil.rmtree(wheels)
    wheels.mkdir(parents=True)
    print(f"{'wheel (trimmed)':<82} {'bytes':>10} {'untrimmed':>10}")
    before = after = 0
    for src in download(CARRY).values():
        b, a = trim_wheel(src, wheels / src.name)
        before, after = before + b, after + a
        print(f"{src.name:<82} {a:>10} {b:>10}")
    print(f"{len(CARRY)} wheels: {after} bytes ({mib(after)}), untrimmed {before} ({mib(before)})")
    spares = PACK / "spares"
    shutil.rmtree(spares, ignore_errors=True)
    spares.mkdir()
    for src in download(SPARES).values():
        shutil.copy2(src, spares / src.name)
    print(f"{len(SPARES)} spares (installed there only where the device's copy is out of range): "
          f"{sum(w.stat().st_size for w in spares.iterdir())} bytes")
    corpus = Path(args.corpus).resolve()
    target = PACK / "corpus.tar.xz"
    if args.no_corpus:
        target.unlink(missing_ok=True)
    elif not target.exists() or args.repack_corpus:
        if not corpus.is_dir():
            sys.exit(f"device_pack: corpus {corpus} is not a folder: pass --corpus DIR")
        t0 = time.perf_counter()
        with tarfile.open(target.with_suffix(".part"), "w:xz", preset=9) as tar:
            tar.add(corpus, arcname=corpus.name, filter=lambda ti: ti if "__pycache__" not in ti.name else None)
        target.with_suffix(".part").replace(target)
        print(f"corpus {corpus} -> {target.relative_to(REPO)}: {target.stat().st_size} bytes "
              f"({time.perf_counter() - t0:.0f} s)")
    tree, pack = travelling_bytes()
    total = tree + pack
    print(f"travels: working tree {tree} + {PACK.relative_to(REPO)} {pack} = {total} bytes ({mib(total)} of "
          f"{mib(LIMIT)}){'  OVER THE LIMIT' if total > LIMIT else ''}")
    return 1 if total > LIMIT else 0


# ----------------------------------------------------------------------------------------------- trace
TRACER = '''import os, sys
_dir = os.environ.get("DEVICE_PACK_TRACE")
if _dir:
    _seen = set()
    class _Tracer:
        def find_spec(self, name, path=None, target=None):
            top = name.partition(".")[0]
            if top not in _seen:
                _seen.add(top)
                f = sys._getframe(1)
                while f is not None and (f.f_globals.get("__name__", "").startswith("importlib")
                                         or f.f_code.co_filename.startswith("<frozen")):
                    f = f.f_back
                who = f.f_globals.get("__name__", "?") if f is not None else "?"
                with open(os.path.join(_dir, "imports-%d.txt" % os.getpid()), "a") as fh:
                    fh.write(top + " " + who + "\\n")
            return None
    sys.meta_path.insert(0, _Tracer())
'''


def trace(args: argparse.Namespace) -> int:
    """Run the tiny flow under an import hook (in every process: the server too), then follow who imported
    what from the project's own packages: distributions reached only through Prefect's entry-point loading
    of installed collections (prefect-dask) do not count."""
    from importlib import metadata

    work = Path(tempfile.mkdtemp(prefix="device-pack-trace-"))
    (work / "hook").mkdir()
    (work / "hook" / "sitecustomize.py").write_text(TRACER)
    (work / "log").mkdir()
    env = dict(os.environ, DEVICE_PACK_TRACE=str(work / "log"), PREFECT_HOME=str(work / "prefect"),
               PYTHONPATH=f"{work / 'hook'}:{REPO}", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
    cmd = [sys.executable, "-m", "topiceq.cli", "run", "--preset", "tiny", "--corpus", str(args.corpus),
           "--out", str(work / "run"), "--device", "cpu"]
    print("tracing:", " ".join(cmd), flush=True)
    with open(work / "run.log", "w") as log:
        rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc:
        print(f"the traced run failed (rc {rc}); its log: {work / 'run.log'}")
        return 1
    owner = {top: norm(d[0]) for top, d in metadata.packages_distributions().items()}
    project = {"topiceq", "pipeline", "topicrnn", "flows"}
    edges: dict[str, set[str]] = {}
    for f in (work / "log").glob("imports-*.txt"):
        for line in f.read_text().splitlines():
            top, who = line.split(" ", 1)
            if top in project or top not in owner or who == "prefect._internal.plugins.collections":
                continue
            wtop = who.partition(".")[0]
            src = "<root>" if wtop in project or wtop not in owner else owner[wtop]
            edges.setdefault(src, set()).add(owner[top])
    reached, todo = set(), ["<root>"]
    while todo:
        for d in edges.get(todo.pop(), ()):
            if d not in reached:
                reached.add(d)
                todo.append(d)
    needed = {d for d in reached if d not in DEVICE_HAS and d not in DASK_ONLY}
    carry = {norm(c) for c in CARRY}
    print(f"imported by the flow: {len(reached)} distributions, {len(reached & DEVICE_HAS)} on the device, "
          f"{len(needed)} not: {len(needed & carry)} carried, {len(needed & OPTIONAL)} optional "
          f"({' '.join(sorted(needed & OPTIONAL))})")
    print("missing from CARRY:", " ".join(sorted(needed - carry - OPTIONAL)) or "none")
    print("in CARRY, not imported:", " ".join(sorted(carry - needed)) or "none")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if needed - carry - OPTIONAL else 0


# ----------------------------------------------------------------------------------- install and check
def wheel_dist(wheel: Path) -> str:
    return norm(wheel.name.split("-")[0])


def install_command(python: str, site: str, without: tuple[str, ...] = (), wheels: list[Path] | None = None
                    ) -> list[str]:
    """The README's install: no index, no dependencies (the device's own packages are the rest); WHEELS
    defaults to the carried ones less WITHOUT."""
    if wheels is None:
        left_out = {norm(n) for n in without}
        wheels = [w for w in (PACK / "wheels").glob("*.whl") if wheel_dist(w) not in left_out]
    return [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
            "--upgrade", "--target", site, *sorted(str(w) for w in wheels)]


def requirement_problems(site: Path) -> list[tuple[object, str | None, str]]:
    """(requirement, version found or None, required by) for each requirement of a distribution in SITE that
    the running Python (SITE first on its path) does not satisfy."""
    from importlib import metadata

    from packaging.requirements import Requirement

    problems = []
    for info in sorted(site.glob("*.dist-info")):
        dist = metadata.Distribution.at(info)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                have = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                problems.append((req, None, dist.name))
                continue
            if not req.specifier.contains(have, prereleases=True):
                problems.append((req, have, dist.name))
    return problems


def check_requirements(args: argparse.Namespace) -> int:
    """Requirements of the carried wheels that this Python misses: absent ones are expected for what the
    trace left out; another version is the warning. --fix-from DIR installs DIR's spare of each such package
    (absent or out of range) into SITE when the spare's version is in range, then checks again."""
    import importlib

    site = Path(args.site)
    problems = requirement_problems(site)
    for req, have, by in problems:
        if have is not None or args.verbose:
            print(f"  {'VERSION' if have else 'absent'}: {by} requires {req}" + (f", found {have}" if have else ""))
    spares = {wheel_dist(w): w for w in Path(args.fix_from).glob("*.whl")} if args.fix_from else {}
    fixes = sorted({spares[norm(req.name)] for req, _, _ in problems if norm(req.name) in spares
                    and req.specifier.contains(spares[norm(req.name)].name.split("-")[1], prereleases=True)})
    if fixes:
        subprocess.run(install_command(sys.executable, str(site), wheels=fixes), check=True)
        importlib.invalidate_caches()
        print("  installed spares:", " ".join(w.name for w in fixes))
        problems = requirement_problems(site)
    wrong = sum(have is not None for _, have, _ in problems)
    print(f"requirements of the carried wheels: {wrong} with another version, {len(problems) - wrong} absent "
          "(not imported by the flow)")
    return 0


# ----------------------------------------------------------------------------------------------- rehearse
def rehearse(args: argparse.Namespace) -> int:
    venv, site, work = Path(args.venv), Path(args.venv + "-site"), Path(tempfile.mkdtemp(prefix="devsim-"))
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([args.python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *DEVICE_STANDINS], check=True)
    # nothing but what the device has: a stand-in's dependency the device lacks goes (pydantic for typer ...)
    listed = subprocess.run([str(py), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                            check=True).stdout.split()
    extra = [n.split("==")[0] for n in listed if norm(n.split("==")[0]) not in DEVICE_HAS]
    if extra:
        subprocess.run([str(py), "-m", "pip", "uninstall", "-y", "-q", *extra], check=True)
    shutil.rmtree(site, ignore_errors=True)
    t0 = time.perf_counter()
    cmd = install_command(str(py), str(site), tuple(args.without))
    subprocess.run(cmd, check=True)
    without = f" (without {' '.join(args.without)})" if args.without else ""
    print(f"installed {sum(c.endswith('.whl') for c in cmd)} wheels{without} into {site} in "
          f"{time.perf_counter() - t0:.1f} s; {sum(f.stat().st_size for f in site.rglob('*') if f.is_file())} "
          f"bytes there")
    env = dict(os.environ, PYTHONPATH=f"{site}:{REPO}", PREFECT_HOME=str(work / "prefect"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
               XDG_CACHE_HOME=str(work / "cache"), PYTHONUNBUFFERED="1")
    failures = []

    def step(name: str, cmd: list[str], expect: str | None = None, expect_rc: int = 0) -> None:
        t = time.perf_counter()
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        out = res.stdout + res.stderr
        ok = res.returncode == expect_rc and (expect is None or expect in out)
        print(f"[{'ok' if ok else 'FAILED'}] {name} ({time.perf_counter() - t:.1f} s, rc {res.returncode})")
        if not ok or args.verbose:
            print("\n".join("    " + line for line in out.strip().splitlines()[-25:]))
        if not ok:
            failures.append(name)

    step("requirements", [str(py), __file__, "check-requirements", "--site", str(site), "--fix-from",
                          str(PACK / "spares")], expect="requirements of the carried wheels: 0 with another")
    step("import prefect, gensim, pylatexenc; a flow with a task on the ephemeral server", [str(py), "-c", (
        "import prefect, gensim, pylatexenc, sys\n"
        "from prefect import flow, task\n"
        "@task\ndef double(x): return 2 * x\n"
        "@flow\ndef f(n): return sum(double.map(range(n)).result())\n"
        "assert f(4) == 12\n"
        "print('flow ok; prefect', prefect.__version__, 'gensim', gensim.__version__, 'torch' in sys.modules)")],
         expect="flow ok")
    step("import pipeline.ingest, pipeline.topics, flows.equations without torch", [str(py), "-c", (
        "import sys, pipeline.ingest, pipeline.topics, flows.equations\n"
        "print('torch imported:', 'torch' in sys.modules)")], expect="torch imported: False")
    step("topiceq ingest (sample corpus)", [str(py), "-m", "topiceq.cli", "ingest", str(args.corpus), "--out",
                                            str(work / "ingest")])
    step("topiceq topics fit", [str(py), "-m", "topiceq.cli", "topics", "fit", "--data", str(work / "ingest"),
                                "--out", str(work / "topics"), "--k", "4"])
    # The whole flow runs ingest and topics on the server, then needs torch (the device's own) to train.
    step("topiceq run --preset tiny: ingest and topics done, train stops at `import torch`",
         [str(py), "-m", "topiceq.cli", "run", "--preset", "tiny", "--corpus", str(args.corpus), "--out",
          str(work / "run"), "--device", "cpu"], expect="No module named 'torch'", expect_rc=1)
    if (work / "run" / "topics").is_dir() and not failures:
        print("    run folder after the stop:", " ".join(sorted(p.name for p in (work / "run").iterdir())))
    shutil.rmtree(work, ignore_errors=True)
    print("rehearsal:", "passed" if not failures else f"FAILED ({', '.join(failures)})")
    return 1 if failures else 0


# ----------------------------------------------------------------------------------------------- device
def device(args: argparse.Namespace) -> int:
    """On the device: install the wheels, unpack the corpus, run the flow inside the deadline, and leave in
    $OUT (at most 8 files come back): device.log, run.tar.gz (the run folder without checkpoints and
    equations.jsonl; with the task results, where the bpc table lives until the report is written) and each
    model's best.pt while it is under 16 MiB."""
    t0 = time.perf_counter()
    out = Path(os.environ.get("OUT") or REPO / "data" / "device-out")
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "device.log", "a", buffering=1)

    def note(text: str) -> None:
        line = f"[{time.perf_counter() - t0:6.1f} s] {text}"
        print(line, flush=True)
        log.write(line + "\n")

    def run(cmd: list[str], env: dict | None = None, seconds: float = 120.0) -> int:
        note("$ " + " ".join(cmd[:12]) + (" ..." if len(cmd) > 12 else ""))
        return run_with_deadline(cmd, env or dict(os.environ), seconds, log)

    import platform

    note(f"python {sys.version.split()[0]} at {sys.executable}; {' '.join(platform.libc_ver())}")
    if run(install_command(sys.executable, args.site)):
        note("pip install failed")
        return 1
    env = dict(os.environ, PYTHONPATH=f"{args.site}:{REPO}", PREFECT_HOME="/tmp/topiceq-prefect",
               PYTHONUNBUFFERED="1", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
    run([sys.executable, __file__, "check-requirements", "--site", args.site, "--fix-from", str(PACK / "spares")],
        env=env)
    corpus_root = Path("/tmp/topiceq-corpus")
    shutil.rmtree(corpus_root, ignore_errors=True)
    with tarfile.open(args.corpus_tar) as tar:
        tar.extractall(corpus_root, filter="data")
        corpus = corpus_root / tar.getnames()[0].split("/")[0]
    note(f"corpus unpacked to {corpus}")
    run_dir = Path(args.out)
    cmd = [sys.executable, "-m", "topiceq.cli", "run", "--preset", args.preset, "--corpus", str(corpus),
           "--out", str(run_dir), *args.run_args]
    left = args.deadline_s - (time.perf_counter() - t0)
    note(f"flow: {left:.0f} s left before the deadline")
    rc = run_with_deadline(cmd, env, left, log)
    note(f"topiceq run: rc {rc}{' (stopped at the deadline)' if rc == 124 else ''}")
    collect(run_dir, out, note)
    note("done")
    return 0


def run_with_deadline(cmd: list[str], env: dict, seconds: float, log) -> int:
    """CMD with its output to the console and LOG; SIGINT at the deadline (Prefect then stops its server),
    SIGKILL 20 s later. 124 when it was stopped."""
    import signal

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    stopped = []

    def stop() -> None:
        stopped.append(True)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)

    import threading

    timer = threading.Timer(max(1.0, seconds), stop)
    timer.start()
    for line in proc.stdout:
        sys.stdout.write(line)
        log.write(line)
    rc = proc.wait()
    timer.cancel()
    return 124 if stopped else rc


def collect(run_dir: Path, out: Path, note) -> None:
    if not run_dir.is_dir():
        note(f"no run folder {run_dir}")
        return
    # The bpc table reaches report.md only at the end of the flow, which stops at the compile check there
    # (no pdflatex): read it from the evaluate task's persisted result (a pickle this run wrote).
    for result in sorted((run_dir / ".prefect-results").glob("evaluate-*")):
        table = pickle.loads(base64.b64decode(json.loads(result.read_text())["result"]))
        note("test bits per character (the evaluate task):\n" + table["markdown"])
    skip = {"equations.jsonl"}  # .prefect-results stays: the bpc table lives only there until the report
    with tarfile.open(out / "run.tar.gz", "w:gz") as tar:
        tar.add(run_dir, arcname="run", filter=lambda ti: None if Path(ti.name).name in skip
                or ti.name.endswith(".pt") else ti)
    note(f"run.tar.gz: {(out / 'run.tar.gz').stat().st_size} bytes")
    for name in ("topic", "plain"):
        best = run_dir / "models" / name / "best.pt"
        if best.is_file():
            note(f"{name}-best.pt: {bring_back_checkpoint(best, out / f'{name}-best.pt')}")


def bring_back_checkpoint(src: Path, dst: Path, limit: int = 15 * 2**20) -> str:
    """SRC as DST under LIMIT bytes (a file back from the device may have 16 MiB): as it is, else model-only
    (no optimizer state; the history and configs stay), else model-only with fp16 weights."""
    if src.stat().st_size <= limit:
        shutil.copy2(src, dst)
        return f"{dst.stat().st_size} bytes, as trained"
    import torch

    payload = torch.load(src, map_location="cpu", weights_only=True)
    payload["optimizer"], payload["carry"] = None, None
    torch.save(payload, dst)
    kind = "model-only"
    if dst.stat().st_size > limit:
        payload["model"] = {k: v.half() if v.is_floating_point() else v for k, v in payload["model"].items()}
        torch.save(payload, dst)
        kind = "model-only, fp16 weights"
    if dst.stat().st_size > limit:
        dst.unlink()
        return f"{src.stat().st_size} bytes: too large to bring back even as {kind}"
    return f"{dst.stat().st_size} bytes, {kind} (of {src.stat().st_size})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="download and trim the wheels, pack the corpus, print what travels")
    p.add_argument("--corpus", default=str(DEMO), help=f"corpus folder to pack (default {DEMO})")
    p.add_argument("--repack-corpus", action="store_true", help="pack the corpus again even if it is there")
    p.add_argument("--no-corpus", action="store_true", help="carry no corpus (e.g. only a charlm run)")
    p.set_defaults(fn=prepare)
    p = sub.add_parser("trace", help="run the tiny flow under an import hook; check CARRY against it")
    p.add_argument("--corpus", default=str(SAMPLE), help=f"corpus for the tiny flow (default {SAMPLE})")
    p.set_defaults(fn=trace)
    p = sub.add_parser("rehearse", help="the device's environment in a Python 3.12 venv: install and run")
    p.add_argument("--python", default="/root/.pyenv/versions/3.12.1/bin/python3.12", help="a Python 3.12")
    p.add_argument("--venv", default="/tmp/devsim", help="the venv (made once); wheels go to VENV-site")
    p.add_argument("--corpus", default=str(SAMPLE), help=f"small corpus (default {SAMPLE})")
    p.add_argument("--without", nargs="+", default=[], metavar="DIST",
                   help="leave these carried wheels out (to prove that each one is needed)")
    p.add_argument("-v", "--verbose", action="store_true", help="show each step's output")
    p.set_defaults(fn=rehearse)
    p = sub.add_parser("check-requirements", help="requirements of the wheels in SITE this Python misses")
    p.add_argument("--site", default=SITE)
    p.add_argument("--fix-from", metavar="DIR", help="install spares from DIR where a version is out of range")
    p.add_argument("-v", "--verbose", action="store_true", help="list the absent ones too")
    p.set_defaults(fn=check_requirements)
    p = sub.add_parser("device", help="on the device: install, unpack, run the flow, results into $OUT")
    p.add_argument("--preset", default="gpu", choices=("tiny", "cpu", "gpu"))
    p.add_argument("--out", default="/tmp/topiceq-run", help="run folder there")
    p.add_argument("--site", default=SITE, help="where the wheels are installed (first on PYTHONPATH)")
    p.add_argument("--corpus-tar", default=str(PACK / "corpus.tar.xz"), help="the packed corpus")
    p.add_argument("--deadline-s", type=float, default=540.0,
                   help="seconds from the start after which the flow is stopped (keep under the call's timeout_s)")
    p.add_argument("run_args", nargs=argparse.REMAINDER, help="more `topiceq run` arguments, after --")
    p.set_defaults(fn=device)
    args = parser.parse_args(argv)
    if getattr(args, "run_args", None) and args.run_args[0] == "--":
        args.run_args = args.run_args[1:]
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
