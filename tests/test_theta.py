"""topicrnn/theta.py: the one θ-for-a-batch conversion every torch model and the sampler share."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from topicrnn.models import ModelConfig, RecurrentLM
from topicrnn.theta import theta_batch


def test_theta_batch_repeats_one_row_keeps_a_batch_and_names_the_shape():
    one = theta_batch([0.25, 0.75], 3, 2, "cpu")
    assert one.shape == (3, 2) and one.dtype == torch.float32 and torch.equal(one[2], torch.tensor([0.25, 0.75]))
    rows = torch.rand(3, 2)
    assert theta_batch(rows, 3, 2, "cpu") is rows  # the sampler's tensor passes through: models cache on it
    assert theta_batch(np.ones((3, 2)), 3, 2, "cpu").shape == (3, 2)
    assert theta_batch(None, 3, 0, "cpu") is None  # an unconditioned model takes none
    with pytest.raises(ValueError, match=r"pass theta \(a topic mixture of 2 floats\)"):
        theta_batch(None, 3, 2, "cpu")
    with pytest.raises(ValueError, match=r"theta must be \[2\] or \[3, 2\]"):
        theta_batch(torch.ones(4, 2), 3, 2, "cpu")


def test_a_model_reads_theta_through_it():
    model = RecurrentLM(ModelConfig(cell="lstm", vocab_size=7, embedding=4, hidden=5, layers=1, topic_dim=2)).eval()
    tokens = torch.zeros(3, 4, dtype=torch.long)
    one_row, _ = model(tokens, torch.tensor([0.5, 0.5]))
    rows, _ = model(tokens, torch.full((3, 2), 0.5))
    assert torch.allclose(one_row, rows)
    with pytest.raises(ValueError, match="topic-conditioned"):
        model(tokens, None)
