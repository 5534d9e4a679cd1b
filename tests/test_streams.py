"""Common random numbers: every component of a run draws from a stream of its own."""

import dataclasses

import numpy as np
import pytest
import torch

from retrieval_lib.models.unified import UnifiedConfig, UnifiedModel
from retrieval_lib.training.streams import component_stream, stream_generator, stream_seed

CONFIG = UnifiedConfig(n_buckets=2**10, term_dim=32, hidden=64, out_dim=32)
DIMS = {"transformer": 16, "graph": 8, "numeric": 4, "location": 6, "history": 16}


def test_stream_seeds_are_stable_and_distinct():
    assert stream_seed(0, "term") == stream_seed(0, "term")
    seeds = {stream_seed(s, n) for s in range(3) for n in ("term", "history", "product", "query")}
    assert len(seeds) == 12 and all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(ValueError, match="name"):
        stream_seed(0, "")


def test_a_component_stream_leaves_the_global_generator_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    with component_stream(0, "term"):
        inside = torch.rand(3)
    assert torch.equal(torch.rand(3), expected)
    with component_stream(0, "term"):
        assert torch.equal(torch.rand(3), inside)  # the same stream again
    assert stream_generator(None, "x") is None
    assert torch.equal(torch.rand(2, generator=stream_generator(1, "x")),
                       torch.rand(2, generator=stream_generator(1, "x")))


def _weights(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_switching_the_history_off_keeps_the_other_components_initial_weights():
    full = UnifiedModel(CONFIG, DIMS, seed=3)
    no_history = UnifiedModel(CONFIG.without("history"), DIMS, seed=3)
    for part in ("term", "product"):
        a, b = _weights(getattr(full, part)), _weights(getattr(no_history, part))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    # and the global generator does not matter once a seed is given
    torch.manual_seed(123)
    again = UnifiedModel(CONFIG, DIMS, seed=3)
    assert all(torch.equal(v, _weights(again)[k]) for k, v in _weights(full).items())
    other = UnifiedModel(CONFIG, DIMS, seed=4)
    assert not torch.equal(_weights(full.product)["0.weight"], _weights(other.product)["0.weight"])


def test_graph_dropout_masks_do_not_depend_on_the_history_or_the_global_generator():
    config = dataclasses.replace(CONFIG, graph_dropout=0.5)
    models = [UnifiedModel(config, DIMS, seed=0), UnifiedModel(config.without("history"), DIMS, seed=0)]
    n = 64
    bags = (torch.zeros(n, dtype=torch.long), torch.arange(n))
    blocks = {name: torch.ones(n, DIMS[name]) for name in ("transformer", "graph", "numeric", "location")}
    masks = []
    for i, model in enumerate(models):
        model.train()
        torch.manual_seed(100 + i)  # other global draws in between must not move the masks
        kept = []
        for _ in range(3):
            seen = {}
            handle = model.product.register_forward_hook(lambda m, inp, out, seen=seen: seen.update(x=inp[0]))
            model.encode_listings(bags, blocks)
            handle.remove()
            start = 32 + DIMS["transformer"]  # term, transformer, then the graph block
            kept.append(seen["x"][:, start:start + DIMS["graph"]].abs().sum(1) > 0)
        masks.append(torch.stack(kept))
    assert torch.equal(masks[0], masks[1])
    assert 0.2 < masks[0].float().mean() < 0.8
    assert np.unique(masks[0].numpy(), axis=0).shape[0] == 3  # a fresh mask at every batch
