"""A decoder-only transformer prior over code grids, the prior that VQGAN (Esser et al. 2021), DALL-E and
Parti put over discrete image codes, here under the same interface as the Gated PixelCNN.

The grid (B, H, W) is read in raster order. The input sequence is the label's token (a class, or "no class",
which also starts an unconditional prior's sequence) followed by the codes but the last; the output at step t
is the logits of code t. Each step adds a learned embedding of the row and of the column of the code it
predicts. Blocks are pre-norm: causal multi-head self-attention, then a GELU MLP four times as wide. Sampling
keeps every layer's keys and values (a KV cache), so a step runs the network on one token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.errors import VQVAEError
from vqvae.nets.controls import SamplingControls, sampling_controls
from vqvae.priors.base import ImagePrior


class Block(nn.Module):
    """One pre-norm block: x + attention(norm(x)), then + MLP(norm(x)). (B, T, C) -> (B, T, C).

    Args:
        channels: C, the width of the residual stream.
        heads: attention heads (a divisor of C).
        dropout: dropout of the attention weights and of both branches' outputs in training.
    """

    def __init__(self, channels: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(),
                                 nn.Linear(4 * channels, channels))
        self.drop = nn.Dropout(dropout)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v  # (B, heads, T, C / heads) each

    def _finish(self, x: Tensor, att: Tensor) -> Tensor:
        x = x + self.drop(self.proj(att.transpose(1, 2).flatten(2)))
        return x + self.drop(self.mlp(self.norm2(x)))

    def forward(self, x: Tensor) -> Tensor:
        """Causal attention over the whole sequence: x (B, T, C) -> (B, T, C)."""
        q, k, v = self._split(x)
        att = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                             is_causal=True)
        return self._finish(x, att)

    def step(self, x: Tensor, cache: tuple[Tensor, Tensor], t: int) -> Tensor:
        """One token at step t: x (B, C) attends to the cached keys and values of steps < t and to its own,
        which are written into ``cache`` ((B, heads, T_max, C / heads) each) at t. Returns (B, C).

        The same arithmetic as :meth:`forward` on one position, with the layers' functions called directly:
        at one token per step the modules' call overhead is most of the cost."""
        b, c = x.shape
        n1, n2, fc1, fc2 = self.norm1, self.norm2, self.mlp[0], self.mlp[2]
        qkv = F.linear(F.layer_norm(x, (c,), n1.weight, n1.bias, n1.eps), self.qkv.weight, self.qkv.bias)
        q, k, v = qkv.view(b, 3, self.heads, 1, c // self.heads).unbind(1)  # (B, heads, 1, C / heads) each
        keys, values = cache
        keys[:, :, t : t + 1], values[:, :, t : t + 1] = k, v
        att = F.scaled_dot_product_attention(q, keys[:, :, : t + 1], values[:, :, : t + 1])
        x = x + F.linear(att.view(b, c), self.proj.weight, self.proj.bias)
        hidden = F.gelu(F.linear(F.layer_norm(x, (c,), n2.weight, n2.bias, n2.eps), fc1.weight, fc1.bias))
        return x + F.linear(hidden, fc2.weight, fc2.bias)


class TransformerPrior(ImagePrior):
    """Prior over code grids: indices (B, H, W) int64 [+ labels (B,)] -> logits (B, K, H, W), the logits at
    (i, j) depending only on the label and the codes before (i, j) in raster order. Grids up to
    ``grid_size`` on a side.

    Args:
        config: the architecture (``kind`` transformer, ``grid_size`` >= 1); None takes the defaults of
            :class:`~vqvae.config.ImagePriorConfig` with kind transformer.
        **overrides: fields of the config to replace (an unconditional prior gets no classes; the result
            is validated).
    """

    prior_kind = "transformer"

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        c = self.config
        if c.grid_size < 1:  # train-prior sets it from the VQ-VAE
            raise VQVAEError(f"prior.grid_size must be >= 1 for a transformer prior (its positions), "
                             f"got {c.grid_size}")
        self.embed = nn.Embedding(c.num_embeddings, c.channels)
        self.label = nn.Embedding(c.num_classes + 1, c.channels)  # the last: "no class"
        self.rows, self.cols = nn.Embedding(c.grid_size, c.channels), nn.Embedding(c.grid_size, c.channels)
        self.blocks = nn.ModuleList(Block(c.channels, c.heads, c.dropout) for _ in range(c.num_layers))
        self.norm = nn.LayerNorm(c.channels)
        self.head = nn.Linear(c.channels, c.num_embeddings)
        self.drop = nn.Dropout(c.dropout)
        for name, p in self.named_parameters():  # GPT-2's initialisation
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02 / (2 * c.num_layers) ** 0.5 if name.endswith("proj.weight")
                                or name.endswith("mlp.2.weight") else 0.02)

    @property
    def null_label(self) -> int:
        """The token of "no class": the first row after the classes."""
        return self.config.num_classes

    def _positions(self, h: int, w: int, device: torch.device) -> Tensor:
        """(H W, C): the row and column embeddings of every position in raster order."""
        g = self.config.grid_size
        if h > g or w > g:
            raise VQVAEError(f"this prior models grids up to {g}x{g} (prior.grid_size), got {h}x{w}")
        i = torch.arange(h, device=device)[:, None].expand(h, w).flatten()
        j = torch.arange(w, device=device)[None].expand(h, w).flatten()
        return self.rows(i) + self.cols(j)

    def _start(self, labels: Tensor | None, batch: int, device: torch.device) -> Tensor:
        """(B, C): the first token, the label's ("no class" without one)."""
        if labels is None:
            labels = torch.full((batch,), self.null_label, dtype=torch.long, device=device)
        return self.label(labels)

    def forward(self, indices: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits of every code given the label and the codes before it in raster order.

        Args:
            indices: (B, H, W) int64 codes in [0, K).
            labels: (B,) class labels in [0, num_classes) (or num_classes, "no class", for a prior trained
                with class dropout), for a conditional prior only; None: no label.
        Returns:
            (B, K, H, W) logits.
        Raises:
            VQVAEError: codes or labels of the wrong shape, type or range, labels for an unconditional
                prior, or a grid larger than ``grid_size``.
        """
        self.check_inputs(indices, labels)
        b, h, w = indices.shape
        codes = self.embed(indices.flatten(1)[:, :-1])  # (B, HW - 1, C)
        start = self._start(labels, b, indices.device)[:, None]
        x = self.drop(torch.cat([start, codes], 1) + self._positions(h, w, indices.device))  # (B, HW, C)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x))  # (B, HW, K)
        return logits.transpose(1, 2).reshape(b, self.config.num_embeddings, h, w)

    @torch.inference_mode()
    def sample(self, shape: tuple[int, int], labels: Tensor, controls: SamplingControls | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """Sample (B, H, W) codes in raster order from a KV cache: each step runs every block on the one
        new token. Same samples as :meth:`sample_naive` for the same generator state (up to floating-point
        summation order, which a tie within rounding error could expose).

        Args:
            shape: (H, W) of the code grid.
            labels: (B,) class labels; sets B (ignored by an unconditional prior).
            controls: temperature, top-k, top-p, guidance; None: the model's own distribution.
            generator: random generator for the uniforms, all drawn up front; None: the global one.
        Returns:
            (B, H, W) int64 codes, on ``labels``' device.
        Raises:
            VQVAEError: labels not (B,) or out of range, guidance for a prior without "no class", or a grid
                larger than ``grid_size``.
        """
        controls = sampling_controls(controls)
        cond, u = self.prepare_sampling(labels, controls, shape, generator)
        (h, w), b, dev = shape, labels.shape[0], labels.device
        c, copies = self.config, 2 if controls.guided else 1
        pos = self._positions(h, w, dev)  # (HW, C)
        dtype = pos.dtype
        size = (b * copies, c.heads, h * w, c.channels // c.heads)  # keys and values of every step
        caches = [tuple(torch.zeros(size, device=dev, dtype=dtype) for _ in range(2)) for _ in self.blocks]
        out = torch.zeros(b, h * w, dtype=torch.long, device=dev)
        x = self._start(cond, b * copies, dev)  # (B, C): the token of step 0
        for t in range(h * w):
            x = x + pos[t]
            for block, cache in zip(self.blocks, caches):
                x = block.step(x, cache, t)
            logits = self.head(self.norm(x))
            out[:, t] = code = controls.draw(logits, u.flatten(1)[:, t])
            x = self.embed(code).repeat(copies, 1)
        return out.view(b, h, w)
