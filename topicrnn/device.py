"""Which torch device a command runs on: `resolve_device("auto")` picks CUDA, then Apple's MPS, then the CPU;
a named device that is not there is an error that says what to use instead."""
from __future__ import annotations

import torch


def mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(name: str | torch.device | None = "auto", *, mps: bool = True) -> torch.device:
    """"auto" (or None, ""): CUDA when torch sees a GPU, else MPS (unless `mps=False`: the HMMs compute in
    float64, which MPS lacks), else the CPU. A name or torch.device: that device, checked."""
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps and mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA GPU; use --device auto or cpu")
    if device.type == "mps" and not (mps and mps_available()):
        raise RuntimeError("--device mps asked for, but MPS is not available here (or not for this model: "
                           "it computes in float64); use --device auto or cpu")
    return device
