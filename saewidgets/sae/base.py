"""`SAE`: one module for every architecture and every loader.

Callers always work in raw residual units: ``encode`` multiplies inputs by ``cfg.input_scale`` and ``decode``
divides by it, so the weights live in the normalised units they were trained in (mean input norm sqrt(d_in)).

    pre = (x * input_scale - b_dec) @ W_enc + b_enc          (b_dec subtracted unless apply_b_dec_to_input=False)
    f   = relu(pre)                                          relu
          relu of the k largest pre-activations, 0 elsewhere topk
          relu(pre) * (pre > threshold)                      jumprelu, batchtopk (at inference)
    x_hat = (f @ W_dec + b_dec) / input_scale
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import SAEConfig

_THRESHOLD_ARCHITECTURES = ("jumprelu", "batchtopk")


class SparseCode(NamedTuple):
    """The k largest feature activations of each token: ``values`` and ``indices``, both ``[..., k]``."""

    values: torch.Tensor
    """Activations (0 where fewer than k latents fired)."""
    indices: torch.Tensor
    """Latent indices (int64)."""


class SAE(nn.Module):
    """A sparse autoencoder over ``cfg.d_in``-wide activations with ``cfg.n_features`` latents.

    Attributes:
        W_enc: ``[d_in, n_features]`` encoder.
        b_enc: ``[n_features]`` encoder bias.
        W_dec: ``[n_features, d_in]`` decoder; row i is feature i's direction.
        b_dec: ``[d_in]`` decoder bias.
        threshold: ``[n_features]`` activation thresholds (``jumprelu`` and ``batchtopk`` only).
        cfg: the `SAEConfig`.
        history: the training log, one dict of metrics per logged step (set by `train_sae`; absent otherwise).
    """

    history: list[dict[str, float]]

    def __init__(self, cfg: SAEConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        d, n = cfg.d_in, cfg.n_features
        self.W_enc = nn.Parameter(torch.empty(d, n))
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.W_dec = nn.Parameter(torch.empty(n, d))
        self.b_dec = nn.Parameter(torch.zeros(d))
        if cfg.architecture == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(n))
        elif cfg.architecture == "batchtopk":
            self.register_buffer("threshold", torch.zeros(n))
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Unit-norm random decoder rows, encoder = decoder transpose, zero biases (thresholds untouched)."""
        w = torch.randn(self.cfg.n_features, self.cfg.d_in, generator=generator)
        self.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
        self.W_enc.copy_(self.W_dec.T)
        self.b_enc.zero_()
        self.b_dec.zero_()

    def __repr__(self) -> str:
        c = self.cfg
        k = f", k={c.k}" if c.k is not None else ""
        where = f", {c.model_name} layer {c.layer}" if c.model_name else ""
        return f"SAE({c.architecture}, d_in={c.d_in}, n_features={c.n_features}{k}{where})"

    # -- encoding -------------------------------------------------------------------------------------------

    def pre_activations(self, x_scaled: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations of inputs already multiplied by ``input_scale``."""
        if self.cfg.apply_b_dec_to_input:
            x_scaled = x_scaled - self.b_dec
        return x_scaled @ self.W_enc + self.b_enc

    def scale_in(self, x: torch.Tensor) -> torch.Tensor:
        """Raw activations -> the normalised units the weights work in."""
        return x.to(self.W_enc.dtype) * self.cfg.input_scale

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Inference activation function: pre-activations -> feature activations."""
        arch = self.cfg.architecture
        if arch == "relu":
            return F.relu(pre)
        if arch == "topk":
            values, indices = pre.topk(self.cfg.active_k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter_(-1, indices, F.relu(values))
        return F.relu(pre) * (pre > self.threshold)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations ``[..., n_features]`` of raw activations ``x`` ``[..., d_in]``."""
        return self.activate(self.pre_activations(self.scale_in(x)))

    def encode_topk(self, x: torch.Tensor, k: int | None = None) -> SparseCode:
        """The ``k`` largest feature activations per token (default ``cfg.k``), without a dense ``[..., F]`` result
        for TopK SAEs. For other architectures ``k`` is required; entries past a token's active count are 0."""
        k = k if k is not None else self.cfg.k
        if k is None:
            raise ValueError(f"encode_topk needs k for a {self.cfg.architecture} SAE (it has no cfg.k).")
        if self.cfg.architecture == "topk" and k == self.cfg.k:
            values, indices = self.pre_activations(self.scale_in(x)).topk(k, dim=-1)
            return SparseCode(F.relu(values), indices)
        values, indices = self.encode(x).topk(k, dim=-1)
        return SparseCode(values, indices)

    # -- decoding -------------------------------------------------------------------------------------------

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Raw-unit reconstruction ``[..., d_in]`` of feature activations ``f`` ``[..., n_features]``."""
        return (f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec) / self.cfg.input_scale

    def decode_sparse(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """`decode` of a `SparseCode`: sums only the k decoder rows each token uses (``embedding_bag``)."""
        return (sparse_decode(values, indices, self.W_dec) + self.b_dec) / self.cfg.input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``x`` in raw units: ``decode(encode(x))``."""
        if self.cfg.architecture == "topk":
            return self.decode_sparse(*self.encode_topk(x))
        return self.decode(self.encode(x))

    # -- identity -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def fingerprint(self) -> str:
        """A short sha256 of the weights and of what changes their meaning (architecture, k, input scale)."""
        h = hashlib.sha256()
        c = self.cfg
        h.update(f"{c.architecture}|{c.k}|{c.input_scale!r}|{c.apply_b_dec_to_input}".encode())
        for name, tensor in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy())  # the buffer itself: no copy
        return h.hexdigest()[:16]


def sparse_decode(values: torch.Tensor, indices: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """``sum_j values[..., j] * W_dec[indices[..., j]]`` (no bias) at k*d cost per token instead of F*d."""
    lead = values.shape[:-1]
    out = F.embedding_bag(
        indices.reshape(-1, indices.shape[-1]),
        W_dec,
        per_sample_weights=values.reshape(-1, values.shape[-1]).to(W_dec.dtype),
        mode="sum",
    )
    return out.reshape(*lead, W_dec.shape[1])
