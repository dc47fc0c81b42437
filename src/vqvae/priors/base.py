"""What the image priors share: :class:`ImagePrior`, a network over code grids (B, H, W) with an optional
class label, its checks, its likelihood, the class dropout that classifier-free guidance needs, and how a
sampler sets up its draws; :func:`build_prior` builds the network a config's ``kind`` names."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.config import ImagePriorConfig
from vqvae.errors import VQVAEError
from vqvae.models.pretrained import Pretrained
from vqvae.nets.controls import SamplingControls, drop_classes, sampling_controls

_NETWORKS: dict[str, type[ImagePrior]] = {}


class ImagePrior(Pretrained, nn.Module):
    """An autoregressive prior over code grids: indices (B, H, W) int64 [+ labels (B,)] -> logits
    (B, K, H, W), the logits at (i, j) depending only on the codes before (i, j) in raster order (and the
    label). Subclasses name the ``prior_kind`` they build and implement ``forward`` and a cached ``sample``;
    ``sample_naive``, the reference it is tested against, is here.

    A conditional prior trained with ``class_dropout`` > 0 has one more label, ``num_classes`` (no class):
    training replaces each label by it with that probability (:meth:`drop_labels`), and a guided sampler runs
    each grid twice, with its label and without.

    Args:
        config: the architecture; None takes the defaults of :class:`~vqvae.config.ImagePriorConfig` with
            this class's kind.
        **overrides: fields of the config to replace (an unconditional prior gets no classes; the result
            is validated).
    """

    checkpoint_kind = "prior"
    config_section = "prior"
    prior_kind: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "prior_kind" in cls.__dict__:  # a network of its own, not a subclass of one
            _NETWORKS[cls.prior_kind] = cls

    def __init__(self, config: ImagePriorConfig | None = None, **overrides):
        super().__init__()
        config = dataclasses.replace(config or ImagePriorConfig(kind=self.prior_kind), **overrides)
        if config.kind != self.prior_kind:
            raise VQVAEError(f"prior.kind is {config.kind!r}, not {self.prior_kind!r}: "
                             f"build it with vqvae.priors.build_prior")
        if not config.conditional or not config.num_classes:  # an unconditional prior has no labels
            config = dataclasses.replace(config, num_classes=0, class_dropout=0.0)
        config.validate()
        self.config = config

    @classmethod
    def build_from_config(cls, config: ImagePriorConfig) -> ImagePrior:
        """The network of ``config.kind`` (what ``from_pretrained`` builds), which must be this class or
        below it."""
        model = build_prior(config)
        if not isinstance(model, cls):
            raise VQVAEError(f"this prior is a {config.kind} prior ({type(model).__name__}), "
                             f"not a {cls.__name__}")
        return model

    @property
    def num_labels(self) -> int:
        """Rows of the label embedding: the classes, and "no class" when the prior was trained without them
        too (class_dropout > 0)."""
        c = self.config
        return c.num_classes + (1 if c.class_dropout > 0 else 0) if c.num_classes else 0

    def check_inputs(self, indices: Tensor, labels: Tensor | None) -> None:
        """Refuse (VQVAEError) codes or labels of the wrong shape, type or range."""
        c = self.config
        if indices.dim() != 3 or indices.dtype != torch.int64:
            raise VQVAEError("expected int64 indices of shape (B, H, W), "
                             f"got {indices.dtype} {tuple(indices.shape)}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= c.num_embeddings):
            raise VQVAEError(f"code indices must lie in [0, {c.num_embeddings}), got "
                             f"[{int(indices.min())}, {int(indices.max())}]")
        if labels is not None:
            if not c.num_classes:
                raise VQVAEError("this prior is unconditional: it takes no labels")
            if labels.shape != indices.shape[:1]:
                raise VQVAEError(f"expected labels of shape ({indices.shape[0]},), got {tuple(labels.shape)}")
            self._check_labels(labels, self.num_labels)

    @staticmethod
    def _check_labels(labels: Tensor, n: int) -> None:
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n):
            raise VQVAEError(f"class labels must lie in [0, {n}), got [{int(labels.min())}, "
                             f"{int(labels.max())}]")

    def drop_labels(self, labels: Tensor | None) -> Tensor | None:
        """What training feeds the prior: each label replaced by "no class" with probability
        ``class_dropout`` (:func:`~vqvae.nets.controls.drop_classes`); None stays None. The network itself
        never drops a label, so evaluation and sampling see the labels they are given.

        Args:
            labels: (B,) class labels, or None.
        Returns:
            (B,) labels, some of them ``num_classes``; or None.
        """
        return drop_classes(labels, self.config.class_dropout, self.config.num_classes)

    def nll(self, indices: Tensor, labels: Tensor | None = None) -> Tensor:
        """Negative log-likelihood in nats of each grid: (B,) -- summed over its positions.

        Args:
            indices: (B, H, W) int64 codes in [0, K).
            labels: (B,) class labels, for a conditional prior; None: no label.
        Returns:
            (B,) negative log-likelihoods in nats.
        Raises:
            VQVAEError: bad codes or labels.
        """
        logits = self(indices, labels)
        return F.cross_entropy(logits, indices, reduction="none").flatten(1).sum(1)

    @torch.inference_mode()
    def sample_naive(self, shape: tuple[int, int], labels: Tensor, controls: SamplingControls | None = None,
                     generator: torch.Generator | None = None) -> Tensor:
        """Sample (B, H, W) codes in raster order, rerunning the whole network for every position.

        Slow but obviously right: the reference that each network's cached :meth:`sample` is tested against.

        Args:
            shape: (H, W) of the code grid.
            labels: (B,) class labels; sets B (ignored by an unconditional prior).
            controls: temperature, top-k, top-p, guidance; None: the model's own distribution.
            generator: random generator for the uniforms, all drawn up front; None: the global one.
        Returns:
            (B, H, W) int64 codes, on ``labels``' device.
        Raises:
            VQVAEError: labels not (B,) or out of range, guidance for a prior without "no class", or a grid
                the network does not model.
        """
        controls = sampling_controls(controls)
        cond, u = self.prepare_sampling(labels, controls, shape, generator)
        h, w = shape
        out = torch.zeros(labels.shape[0], h, w, dtype=torch.long, device=labels.device)
        copies = 2 if controls.guided else 1
        for i in range(h):
            for j in range(w):
                logits = self(out.repeat(copies, 1, 1), cond)[:, :, i, j]
                out[:, i, j] = controls.draw(logits, u[:, i, j])
        return out

    def prepare_sampling(self, labels: Tensor, controls: SamplingControls, shape: tuple[int, int],
                         generator: torch.Generator | None) -> tuple[Tensor | None, Tensor]:
        """The labels a sampler runs with and its uniforms.

        Args:
            labels: (B,) class labels (ignored by an unconditional prior); ``num_classes`` ("no class")
                for a prior trained with class dropout.
            controls: how the logits become draws; guidance needs a prior trained with class dropout.
            shape: (H, W) of the code grid.
            generator: random generator for the uniforms, all drawn up front (on the CPU for a CPU
                generator); None: the global one.
        Returns:
            ``(labels, u)``: (B,) labels -- (2B,) when guided: the labels, then "no class" for each -- or None
            for an unconditional prior; and (B, H, W) float64 uniforms on ``labels``' device.
        Raises:
            VQVAEError: labels not (B,) or out of range; guidance for a prior without "no class".
        """
        if labels.dim() != 1:
            raise VQVAEError(f"expected labels of shape (B,), got {tuple(labels.shape)}")
        c = self.config
        if c.num_classes:  # "no class" too, where the prior has it: samples without a class
            self._check_labels(labels, self.num_labels)
        if controls.guided and not (c.num_classes and c.class_dropout > 0):
            raise VQVAEError("guidance needs a class-conditional prior trained with prior.class_dropout > 0 "
                             "(it models the codes without a class too); this one was not")
        h, w = shape
        if h < 1 or w < 1:
            raise VQVAEError(f"cannot sample a {h}x{w} grid")
        u = torch.rand(labels.shape[0], h, w, generator=generator, dtype=torch.float64).to(labels.device)
        if not c.num_classes:
            return None, u
        if controls.guided:
            labels = torch.cat([labels, torch.full_like(labels, c.num_classes)])
        return labels, u


def build_prior(config: ImagePriorConfig) -> ImagePrior:
    """The image prior ``config.kind`` names (:class:`~vqvae.priors.GatedPixelCNN` or
    :class:`~vqvae.priors.TransformerPrior`), built from ``config``.

    Args:
        config: the architecture.
    Returns:
        the prior, an :class:`ImagePrior`.
    Raises:
        VQVAEError: an unknown kind or a bad config.
    """
    if config.kind not in _NETWORKS:
        raise VQVAEError(f"prior.kind must be one of {', '.join(sorted(_NETWORKS))}, got {config.kind!r}")
    return _NETWORKS[config.kind](config)
