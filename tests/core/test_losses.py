"""Loss terms: the decoder Jacobian sparsity term (structural sparsity)."""

from __future__ import annotations

import math

import torch
from torch import nn

from cmcl_core.losses import decoder_jacobian_l1


class _LinearLogitDecoder(nn.Module):
    """z [n, m] -> logits [n, 1, 1, P] of a fixed linear map (Jacobian known in closed form)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)  # [P, m]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.weight.T).view(z.shape[0], 1, 1, -1)


def _disjoint_decoder(rotation: float) -> _LinearLogitDecoder:
    """Two latents driving disjoint halves of 8 pixels, optionally rotated into each other."""
    base = torch.zeros(8, 2)
    base[:4, 0] = 1.0
    base[4:, 1] = 1.0
    c, s = math.cos(rotation), math.sin(rotation)
    rot = torch.tensor([[c, -s], [s, c]])
    return _LinearLogitDecoder(base @ rot)


def test_jacobian_l1_matches_the_closed_form_at_zero():
    dec = _disjoint_decoder(0.0)
    z = torch.zeros(3, 2)
    dims, scale = torch.tensor([0, 1]), torch.ones(2)
    # sigmoid'(0) = 1/4 on 4 pixels per latent, 2 latents: 2 * 4 * 0.25 = 2, up to the step error
    value = decoder_jacobian_l1(dec, z, dims, scale, step=1e-3)
    assert abs(value.item() - 2.0) < 1e-3


def test_jacobian_l1_is_smallest_for_aligned_latents():
    z = torch.zeros(4, 2)
    dims, scale = torch.tensor([0, 1]), torch.ones(2)
    aligned = decoder_jacobian_l1(_disjoint_decoder(0.0), z, dims, scale, step=1e-3)
    mixed = [
        decoder_jacobian_l1(_disjoint_decoder(a), z, dims, scale, step=1e-3).item()
        for a in (0.2, 0.5, math.pi / 4)
    ]
    assert all(v > aligned.item() + 0.1 for v in mixed)
    assert mixed[0] < mixed[1] < mixed[2]  # grows with the mixing angle up to 45 degrees


def test_jacobian_l1_is_invariant_to_latent_scale_and_trains_the_decoder_only():
    dec = _disjoint_decoder(0.3)
    z = torch.randn(5, 2, requires_grad=True)
    dims = torch.tensor([0, 1])
    a = decoder_jacobian_l1(dec, z, dims, torch.ones(2), step=1e-3)
    # doubling a latent's spread and halving the decoder's weight on it: same pixel change per sd
    dec2 = _LinearLogitDecoder(dec.weight.detach() * torch.tensor([0.5, 1.0]))
    z2 = z.detach() * torch.tensor([2.0, 1.0])
    b = decoder_jacobian_l1(dec2, z2, dims, torch.tensor([2.0, 1.0]), step=1e-3)
    assert abs(a.item() - b.item()) < 1e-3
    a.backward()
    assert z.grad is None  # the points are constants
    assert dec.weight.grad is not None and dec.weight.grad.abs().sum() > 0
