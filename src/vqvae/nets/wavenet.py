"""WaveNet (van den Oord et al. 2016, arXiv:1609.03499): the VQ-VAE paper's audio decoder and audio prior.

A stack of dilated causal convolutions (kernel 2, dilations such as 1, 2, ..., 512 repeated), each followed
by the gated unit ``tanh(W_f * x + V_f c) * sigmoid(W_g * x + V_g c)``, a 1x1 convolution into a residual and
a skip path, and a head ``ReLU -> 1x1 -> ReLU -> 1x1`` over the summed skips giving a softmax over the
classes (256 mu-law levels for the decoder, K codes for the prior). Conditioning ``c`` is local (a feature
sequence as long as the output, e.g. the upsampled VQ-VAE codes) and/or global (a learned embedding of the
speaker).

The input classes are embedded and shifted right by one step, so the logits at step t depend on the classes
before t only: ``forward`` is the training-time parallel pass; ``generate`` draws one sample per step from
cached activations (Paine et al. 2016, "Fast Wavenet Generation Algorithm": each layer keeps a queue of its
last ``dilation`` inputs), and ``generate_naive`` reruns the network over its receptive field per step. Both
use the same uniforms drawn up front, so they return the same samples for the same generator (a test).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.errors import VQVAEError
from vqvae.nets.controls import SamplingControls, sampling_controls


class WaveNetLayer(nn.Module):
    """One residual layer: (B, C, T) -> (residual (B, C, T), skip (B, S, T)).

    Args:
        channels: C, residual channels.
        skip_channels: S, skip channels.
        dilation: dilation of the causal 2-wide convolution.
        local_channels: channels of the local conditioning; 0 for none.
        num_globals: size of the global embedding table; 0 for no global conditioning.
    """

    def __init__(self, channels: int, skip_channels: int, dilation: int, local_channels: int,
                 num_globals: int):
        super().__init__()
        self.dilation, self.channels = dilation, channels
        self.conv = nn.Conv1d(channels, 2 * channels, 2, dilation=dilation)
        self.local = nn.Conv1d(local_channels, 2 * channels, 1, bias=False) if local_channels else None
        self.glob = nn.Embedding(num_globals, 2 * channels) if num_globals else None
        if self.glob is not None:
            # Zero: every speaker starts from the same network and the gradient tells them apart. PyTorch's
            # N(0, 1) default adds a unit-sized random offset to every gate, which saturates them and costs
            # likelihood (docs/audio.md).
            nn.init.zeros_(self.glob.weight)
        self.out = nn.Conv1d(channels, channels + skip_channels, 1)  # residual and skip in one product

    def conditioning(self, local: Tensor | None, globals_: Tensor | None) -> Tensor | float:
        """The conditioning term added before the gate: (B, 2C, T), (B, 2C, 1) or 0.

        Args:
            local: (B, local_channels, T) local features, or None; ignored without local conditioning.
            globals_: (B,) or (B, G) global ids, or None; ignored without global conditioning.
        Returns:
            the sum of the local and global terms: (B, 2C, T), (B, 2C, 1), or 0.0 when there is neither.
        """
        c: Tensor | float = 0.0
        if self.local is not None and local is not None:
            c = self.local(local)
        if self.glob is not None and globals_ is not None:
            ids = self.glob(globals_)  # (B, 2C), or (B, G, 2C) for G ids each: their embeddings add up
            c = c + (ids.sum(1) if ids.dim() == 3 else ids)[:, :, None]
        return c

    def forward(self, h: Tensor, cond: Tensor | float) -> tuple[Tensor, Tensor]:
        """Run the layer.

        Args:
            h: (B, C, T) input.
            cond: conditioning term from :meth:`conditioning`.
        Returns:
            ``(residual, skip)``: (B, C, T) and (B, S, T).
        """
        a = self.conv(F.pad(h, (self.dilation, 0))) + cond  # causal: step t sees t - d and t
        z = torch.tanh(a[:, : self.channels]) * torch.sigmoid(a[:, self.channels :])
        o = self.out(z)
        return h + o[:, : self.channels], o[:, self.channels :]


class WaveNet(nn.Module):
    """Classes (B, T) int64 [+ local (B, L, T)] [+ globals (B,) or (B, G)] -> logits (B, num_classes, T).

    The logits at step t predict class t from classes < t. Global ids index one table of ``num_globals``
    embeddings; with G ids per sequence (e.g. a speaker and a word class, offset into the table) their
    embeddings add up. The receptive field is ``sum(dilations) + 1`` steps of input before the step
    predicted.

    Args:
        num_classes: Q, number of classes (>= 1).
        channels: residual channels C (>= 1).
        skip_channels: skip channels S (>= 1).
        dilations: one layer per entry, e.g. ``[1, 2, 4, ..., 512] * 2`` (the default), all positive.
        local_channels: L, channels of the local conditioning; 0 (default) for none.
        num_globals: size of the global embedding table; 0 (default) for no global conditioning.
    """

    def __init__(self, num_classes: int, channels: int = 64, skip_channels: int = 128,
                 dilations: list[int] | tuple[int, ...] = tuple(2**i for i in range(10)) * 2,
                 local_channels: int = 0, num_globals: int = 0):
        super().__init__()
        for name, v in (("num_classes", num_classes), ("channels", channels),
                        ("skip_channels", skip_channels)):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if not dilations or any(int(d) < 1 for d in dilations):
            raise ValueError("dilations must be a non-empty list of positive integers, "
                             f"got {list(dilations)}")
        if local_channels < 0 or num_globals < 0:
            raise ValueError("local_channels and num_globals must be >= 0, "
                             f"got {local_channels}, {num_globals}")
        self.num_classes, self.local_channels, self.num_globals = num_classes, local_channels, num_globals
        self.dilations = [int(d) for d in dilations]
        self.embed = nn.Embedding(num_classes, channels)
        self.layers = nn.ModuleList(WaveNetLayer(channels, skip_channels, d, local_channels, num_globals)
                                    for d in self.dilations)
        self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(skip_channels, skip_channels, 1), nn.ReLU(),
                                  nn.Conv1d(skip_channels, num_classes, 1))

    @property
    def receptive_field(self) -> int:
        """Number of past classes the logits at one step can depend on."""
        return sum(self.dilations) + 1

    # -- checks ---------------------------------------------------------------------------------------
    def _check(self, batch: int, length: int, local: Tensor | None, globals_: Tensor | None) -> None:
        if self.local_channels:
            if local is None:
                raise VQVAEError("this WaveNet is locally conditioned: pass local features (B, L, T)")
            if local.dim() != 3 or local.shape != (batch, self.local_channels, length):
                raise VQVAEError("expected local features of shape "
                                 f"({batch}, {self.local_channels}, {length}), got {tuple(local.shape)}")
        elif local is not None:
            raise VQVAEError("this WaveNet has no local conditioning")
        if self.num_globals:
            if globals_ is None or globals_.dim() not in (1, 2) or globals_.shape[0] != batch:
                raise VQVAEError("this WaveNet is globally conditioned: "
                                 f"pass ids of shape ({batch},) or ({batch}, G)")
            if globals_.numel() and (int(globals_.min()) < 0 or int(globals_.max()) >= self.num_globals):
                raise VQVAEError(f"global ids must lie in [0, {self.num_globals}), got "
                                 f"[{int(globals_.min())}, {int(globals_.max())}]")
        elif globals_ is not None:
            raise VQVAEError("this WaveNet has no global conditioning")

    # -- the parallel pass ----------------------------------------------------------------------------
    def forward(self, x: Tensor, local: Tensor | None = None, globals_: Tensor | None = None) -> Tensor:
        """The training-time parallel pass.

        Args:
            x: (B, T) int64 classes in [0, Q).
            local: (B, L, T) local features; required exactly when the net is locally conditioned.
            globals_: (B,) or (B, G) ids in [0, num_globals); required exactly when globally conditioned.
        Returns:
            (B, Q, T) logits; those at step t depend on the classes before t only.
        Raises:
            VQVAEError: classes, local features or global ids of the wrong shape, type or range.
        """
        if x.dim() != 2 or x.dtype != torch.int64:
            raise VQVAEError(f"expected int64 classes of shape (B, T), got {x.dtype} {tuple(x.shape)}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.num_classes):
            raise VQVAEError(f"classes must lie in [0, {self.num_classes}), "
                             f"got [{int(x.min())}, {int(x.max())}]")
        self._check(x.shape[0], x.shape[1], local, globals_)
        return self.forward_embedded(self.embed(x).transpose(1, 2), local, globals_)

    def forward_embedded(self, e: Tensor, local: Tensor | None = None,
                         globals_: Tensor | None = None) -> Tensor:
        """Logits (B, Q, T) from embedded classes e (B, C, T) -- the causal network itself (no input checks).

        Args:
            e: (B, C, T) embedded classes, not yet shifted.
            local: (B, L, T) local features, or None.
            globals_: (B,) or (B, G) global ids, or None.
        Returns:
            (B, Q, T) logits.
        """
        h = F.pad(e, (1, 0))[:, :, :-1]  # shift right: step t sees classes < t
        skips: Tensor | float = 0.0
        for layer in self.layers:
            h, s = layer(h, layer.conditioning(local, globals_))
            skips = skips + s
        return self.head(skips)

    def nll(self, x: Tensor, local: Tensor | None = None, globals_: Tensor | None = None) -> Tensor:
        """Negative log-likelihood in nats of every step: (B, T).

        Args:
            x: (B, T) int64 classes in [0, Q).
            local: (B, L, T) local features, or None (as in :meth:`forward`).
            globals_: (B,) or (B, G) global ids, or None (as in :meth:`forward`).
        Returns:
            (B, T) negative log-likelihoods in nats.
        """
        return F.cross_entropy(self(x, local, globals_), x, reduction="none")

    # -- sampling -------------------------------------------------------------------------------------
    def _prepare(self, batch: int, length: int, local: Tensor | None, globals_: Tensor | None,
                 controls: SamplingControls, generator: torch.Generator | None) -> tuple[Tensor, int]:
        if batch < 1 or length < 0:
            raise VQVAEError(f"cannot generate {batch} sequences of {length} steps")
        rows = 2 * batch if controls.guided else batch
        if controls.guided and not self.num_globals:
            raise VQVAEError("guidance needs a globally conditioned WaveNet (ids with and without the class)")
        self._check(rows, length, local, globals_)
        # all randomness up front, one uniform per step: both samplers consume it identically; drawn on the
        # generator's device (the CPU for a CPU generator), so every device gets the same samples
        u = torch.rand(batch, length, generator=generator, dtype=torch.float64).to(self.embed.weight.device)
        return u, rows

    @torch.inference_mode()
    def generate_naive(self, batch: int, length: int, local: Tensor | None = None,
                       globals_: Tensor | None = None, controls: SamplingControls | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        """(B, length) classes, each step rerunning the whole network over the receptive field before it.

        Returns the same samples as :meth:`generate` for the same generator.

        Args:
            batch: B, number of sequences (>= 1).
            length: steps per sequence (>= 0).
            local: (B, L, length) local features; required exactly when the net is locally conditioned.
            globals_: (B,) or (B, G) global ids -- (2B, ...) when guided: the conditional rows, then the
                unconditional ones; required exactly when the net is globally conditioned.
            controls: temperature, top-k, top-p, guidance; None: the model's own distribution.
            generator: random generator for the uniforms, drawn up front on its device; None: the global one.
        Returns:
            (batch, length) int64 classes.
        Raises:
            VQVAEError: a batch < 1, a negative length or bad conditioning.
        """
        controls = sampling_controls(controls)
        u, rows = self._prepare(batch, length, local, globals_, controls, generator)
        out = torch.zeros(batch, length, dtype=torch.long, device=self.embed.weight.device)
        rf = self.receptive_field
        for t in range(length):
            s = max(0, t - rf)  # the logits at t depend on classes t - rf .. t - 1
            window_local = local[:, :, s : t + 1] if local is not None else None
            logits = self(out[:, s : t + 1].repeat(rows // batch, 1), window_local, globals_)[:, :, -1]
            out[:, t] = controls.draw(logits, u[:, t])
        return out

    @torch.inference_mode()
    def generate(self, batch: int, length: int, local: Tensor | None = None, globals_: Tensor | None = None,
                 controls: SamplingControls | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """(B, length) classes, one step at a time from cached activations: every layer keeps a queue of its
        inputs of the last ``dilation`` steps, so a step costs one vector-matrix product per layer.

        Args:
            batch: B, number of sequences (>= 1).
            length: steps per sequence (>= 0).
            local: (B, L, length) local features; required exactly when the net is locally conditioned.
            globals_: (B,) or (B, G) global ids -- (2B, ...) when guided: the conditional rows, then the
                unconditional ones; required exactly when the net is globally conditioned.
            controls: temperature, top-k, top-p, guidance; None: the model's own distribution.
            generator: random generator for the uniforms, drawn up front on its device; None: the global one.
        Returns:
            (batch, length) int64 classes.
        Raises:
            VQVAEError: a batch < 1, a negative length or bad conditioning.
        """
        controls = sampling_controls(controls)
        u, rows = self._prepare(batch, length, local, globals_, controls, generator)
        return self._generate_cached(u, rows, local, globals_, controls)

    def _generate_cached(self, u: Tensor, batch: int, local: Tensor | None, globals_: Tensor | None,
                         controls: SamplingControls) -> Tensor:
        """:meth:`generate` for uniforms u (B, length) on ``batch`` rows (2B when guided)."""
        length = u.shape[1]
        dev, dtype = self.embed.weight.device, self.embed.weight.dtype
        c, n = self.embed.weight.shape[1], len(self.layers)
        taps, conds, res = [], [], []
        for layer in self.layers:
            taps.append(torch.cat([layer.conv.weight[:, :, 0], layer.conv.weight[:, :, 1]], 1)
                        .t().contiguous())  # (2C, 2C)
            cond = (layer.conv.bias[None, :, None]
                    + layer.conditioning(local, globals_)).expand(batch, -1, -1)
            conds.append(cond.permute(2, 0, 1).contiguous())  # (T or 1, B, 2C): step t's row is contiguous
            res.append((layer.out.weight[:c, :, 0].t().contiguous(),
                        layer.out.bias[:c].expand(batch, -1).contiguous()))
        # the skips of all layers in one (nC, S) product: sum_i z_i W_i = [z_1 ... z_n] [W_1; ...; W_n]
        skip_w = torch.cat([layer.out.weight[c:, :, 0].t() for layer in self.layers], 0).contiguous()
        skip_b = sum(layer.out.bias[c:] for layer in self.layers)
        head1, head2 = self.head[1], self.head[3]
        zs = torch.zeros(batch, n * c, dtype=dtype, device=dev)
        z_views = [zs[:, i * c : (i + 1) * c] for i in range(n)]  # layer i writes its gate output here
        # each layer's queue of its inputs at the last `dilation` steps (zeros before the start), one view
        # per slot
        queues = [list(torch.zeros(d, batch, c, dtype=dtype, device=dev).unbind(0)) for d in self.dilations]
        out = torch.zeros(len(u), length, dtype=torch.long, device=dev)
        h0 = torch.zeros(batch, c, dtype=dtype, device=dev)  # the shifted input at step 0
        for t in range(length):
            h = h0 if t == 0 else self.embed(out[:, t - 1]).repeat(batch // len(u), 1)
            for i, d in enumerate(self.dilations):
                slot = queues[i][t % d]  # this layer's input at step t - d
                cond = conds[i]
                # (B, 2C): the gate's input, both taps and the conditioning
                pre = torch.addmm(cond[t if len(cond) > 1 else 0], torch.cat([slot, h], 1), taps[i])
                slot.copy_(h)  # ... and now its input at step t, read again at step t + d
                filt, gate = pre.chunk(2, 1)
                z = torch.tanh(filt, out=z_views[i]).mul_(torch.sigmoid(gate))
                if i + 1 < n:  # the last layer's residual output feeds nothing
                    h = torch.addmm(res[i][1], z, res[i][0]).add_(h)
            skips = torch.addmm(skip_b, zs, skip_w)
            hidden = F.relu(F.linear(F.relu(skips), head1.weight[:, :, 0], head1.bias))
            logits = F.linear(hidden, head2.weight[:, :, 0], head2.bias)
            out[:, t] = controls.draw(logits, u[:, t])
        return out
