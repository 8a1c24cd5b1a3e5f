"""Tests of evograd.flat: the flat vector and the named parameters are the same numbers."""

import pytest
import torch
from torch import nn

from evograd import flat


def _model():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model[2].bias.requires_grad_(False)  # frozen parameters are not part of the search space
    return model


def test_layout_names_shapes_and_slices():
    layout = flat.layout_of(_model())
    assert layout.names == ("0.weight", "0.bias", "2.weight")
    assert layout.dim == 12 + 4 + 8
    assert layout.slices["2.weight"] == slice(16, 24)


def test_flatten_unflatten_round_trip():
    model = _model()
    vector = flat.flatten(model)
    views = flat.unflatten(vector, flat.layout_of(model))
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(views[name], p.detach())


def test_assign_writes_the_vector_into_the_model():
    model = _model()
    frozen = model[2].bias.detach().clone()
    vector = torch.arange(24, dtype=torch.float32)
    flat.assign(model, vector)
    assert torch.equal(flat.flatten(model), vector)
    assert torch.equal(model[0].weight[1], torch.tensor([3.0, 4.0, 5.0]))
    assert torch.equal(model[2].bias, frozen)


def test_stacked_rows_are_the_unflattened_rows():
    model = _model()
    layout = flat.layout_of(model)
    rows = torch.randn(5, layout.dim, generator=torch.Generator().manual_seed(0))
    stacked = flat.stacked(rows, layout)
    for i in range(5):
        single = flat.unflatten(rows[i], layout)
        for name in layout.names:
            assert torch.equal(stacked[name][i], single[name])


def test_wrong_length_is_refused():
    with pytest.raises(ValueError, match="24 parameters"):
        flat.unflatten(torch.zeros(23), flat.layout_of(_model()))
    with pytest.raises(ValueError, match="no trainable parameters"):
        flat.layout_of(nn.ReLU())
