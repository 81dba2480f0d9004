"""bench/device_pack.py: trimmed wheels that pip installs, checkpoints small enough to come back, a consistent
CARRY list. (`rehearse` is the end-to-end check: it needs Python 3.12 and the downloaded wheels.)"""
from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("device_pack", REPO / "bench" / "device_pack.py")
device_pack = importlib.util.module_from_spec(spec)
spec.loader.exec_module(device_pack)

KEPT = {"demo_pkg/__init__.py": b"VALUE = 42\n", "demo_pkg/testing/helpers.py": b"HELP = 1\n",
        "demo_pkg/data/table.txt": b"a b c\n", "demo_pkg-1.0.dist-info/METADATA":
        b"Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n",
        "demo_pkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                         b"Tag: py3-none-any\n"}
DROPPED = {"demo_pkg/tests/test_a.py": b"assert True\n", "demo_pkg/sub/test/data.bin": b"\0" * 1000,
           "demo_pkg/_speed.c": b"int x;\n", "demo_pkg/_speed.pyx": b"cdef int x\n",
           "prefect/server/ui/index.html": b"<html></html>\n"}


def make_wheel(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in {**KEPT, **DROPPED}.items():
            z.writestr(name, data)
        z.writestr("demo_pkg-1.0.dist-info/RECORD", "stale,,\n")


def test_trim_wheel_drops_tests_sources_and_ui_and_writes_a_true_record(tmp_path):
    src, dst = tmp_path / "src" / "demo_pkg-1.0-py3-none-any.whl", tmp_path / "demo_pkg-1.0-py3-none-any.whl"
    src.parent.mkdir()
    make_wheel(src)
    device_pack.trim_wheel(src, dst)
    with zipfile.ZipFile(dst) as z:
        names = set(z.namelist())
        record = list(csv.reader(z.read("demo_pkg-1.0.dist-info/RECORD").decode().splitlines()))
    assert names == set(KEPT) | {"demo_pkg-1.0.dist-info/RECORD"}
    rows = {r[0]: r[1:] for r in record}
    assert rows.pop("demo_pkg-1.0.dist-info/RECORD") == ["", ""]
    assert set(rows) == set(KEPT)
    for name, (digest, size) in rows.items():
        want = base64.urlsafe_b64encode(hashlib.sha256(KEPT[name]).digest()).rstrip(b"=").decode()
        assert (digest, size) == (f"sha256={want}", str(len(KEPT[name])))


def test_trimmed_wheel_installs_with_the_device_command(tmp_path, monkeypatch):
    monkeypatch.setattr(device_pack, "PACK", tmp_path / "pack")
    src = tmp_path / "src" / "demo_pkg-1.0-py3-none-any.whl"
    src.parent.mkdir()
    (tmp_path / "pack" / "wheels").mkdir(parents=True)
    make_wheel(src)
    device_pack.trim_wheel(src, tmp_path / "pack" / "wheels" / src.name)
    site = tmp_path / "site"
    subprocess.run(device_pack.install_command(sys.executable, str(site)), check=True, capture_output=True)
    assert (site / "demo_pkg" / "__init__.py").read_bytes() == KEPT["demo_pkg/__init__.py"]
    assert not (site / "demo_pkg" / "tests").exists() and not (site / "demo_pkg" / "_speed.c").exists()
    assert (site / "demo_pkg" / "testing" / "helpers.py").exists()  # "testing" is not a test folder


def test_install_command_leaves_out_what_it_is_told(tmp_path, monkeypatch):
    monkeypatch.setattr(device_pack, "PACK", tmp_path)
    (tmp_path / "wheels").mkdir()
    for name in ("burner_redis-0.1.7-cp310-abi3-manylinux_2_17_x86_64.whl", "prefect-3.9.1-py3-none-any.whl"):
        (tmp_path / "wheels" / name).touch()
    wheels = [Path(c).name for c in device_pack.install_command("python3", "/tmp/site", ("burner-redis",))
              if c.endswith(".whl")]
    assert wheels == ["prefect-3.9.1-py3-none-any.whl"]


def test_checkpoint_comes_back_under_the_limit(tmp_path):
    torch = pytest.importorskip("torch")
    model = {"w": torch.ones(64, 64), "steps": torch.tensor(3)}
    src = tmp_path / "best.pt"
    torch.save({"model": model, "optimizer": {"state": {0: {"m": torch.ones(64, 64)}}}, "carry": None,
                "history": [1.0]}, src)
    full, weights = src.stat().st_size, 64 * 64 * 4
    assert "as trained" in device_pack.bring_back_checkpoint(src, tmp_path / "a.pt", limit=full)
    assert "model-only (" in device_pack.bring_back_checkpoint(src, tmp_path / "b.pt", limit=full - 1)
    slim = torch.load(tmp_path / "b.pt", weights_only=True)
    assert slim["optimizer"] is None and slim["history"] == [1.0] and slim["model"]["w"].dtype == torch.float32
    assert "fp16" in device_pack.bring_back_checkpoint(src, tmp_path / "c.pt", limit=weights)
    half = torch.load(tmp_path / "c.pt", weights_only=True)["model"]
    assert half["w"].dtype == torch.float16 and half["steps"].dtype == torch.int64
    assert "too large" in device_pack.bring_back_checkpoint(src, tmp_path / "d.pt", limit=100)
    assert not (tmp_path / "d.pt").exists()


def test_carry_list_is_consistent():
    carry = [device_pack.norm(c) for c in device_pack.CARRY]
    assert len(carry) == len(set(carry))
    assert not set(carry) & device_pack.DEVICE_HAS, "carried although the device has it"
    assert not set(carry) & (device_pack.DASK_ONLY | device_pack.OPTIONAL)
    assert {device_pack.norm(s) for s in device_pack.SPARES} <= device_pack.DEVICE_HAS, "a spare replaces a device copy"
