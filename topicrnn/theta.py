"""θ for a batch: the one place that turns what a caller passes (None, [K], [n, K]; array, list or tensor) into
the float tensor [n, K] a model reads, and says what is wrong when the shape is not the model's."""
from __future__ import annotations

import numpy as np
import torch


def theta_batch(theta, n: int, k: int, device, *, what: str = "a topic mixture") -> torch.Tensor | None:
    """None | [K] | [n, K] -> float32 tensor [n, K] on `device`; None when the model takes no θ (k == 0)."""
    if k == 0:
        return None
    if theta is None:
        raise ValueError(f"this model is topic-conditioned (K={k}): pass theta ({what} of {k} floats)")
    t = torch.as_tensor(np.asarray(theta, dtype=np.float32) if not torch.is_tensor(theta) else theta)
    t = t.to(device=device, dtype=torch.float32)
    if t.dim() == 1:
        t = t.unsqueeze(0).expand(n, -1)
    if t.shape != (n, k):
        raise ValueError(f"theta must be [{k}] or [{n}, {k}] ({what}), not {list(t.shape)}")
    return t
