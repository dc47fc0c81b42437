"""The priors' architectures: the image prior over code grids (:class:`ImagePriorConfig`: a Gated PixelCNN
or a transformer, by ``kind``) and the audio prior over code sequences (:class:`AudioPriorConfig`, a
WaveNet)."""

from __future__ import annotations

from dataclasses import dataclass

from vqvae.config.models import WaveNetStack, check_field

PRIOR_KINDS = ("pixelcnn", "transformer")


@dataclass
class ImagePriorConfig:
    """The image prior's architecture; ``num_embeddings``, ``num_classes`` and ``grid_size`` come from the
    VQ-VAE and its data. ``kind`` picks the network: ``pixelcnn``, the paper's Gated PixelCNN, or
    ``transformer``, a decoder-only transformer over the grid in raster order with the class as its first
    token. A field the chosen kind does not use must keep its default (it is refused, not ignored)."""

    kind: str = "pixelcnn"  # "pixelcnn" or "transformer"
    num_embeddings: int = 512  # K: codes per position (the VQ-VAE's codebook size)
    num_classes: int = 10  # labels for conditioning (0: unconditional)
    conditional: bool = True  # condition on the class label (train-prior sets num_classes to 0 when false)
    # training: the label is replaced by a learned "no class" with this probability, so the prior also
    # models the codes without a class: what classifier-free guidance mixes in when sampling (0: never)
    class_dropout: float = 0.0
    grid_size: int = 0  # side of the code grid (set from the VQ-VAE); the transformer's positions
    channels: int = 64  # pixelcnn: width of both stacks; transformer: width of the residual stream
    num_layers: int = 12  # pixelcnn: gated layers; transformer: blocks
    dropout: float = 0.0  # training: dropout of each layer's output (pixelcnn: the gated units)
    kernel_size: int = 5  # pixelcnn: odd; the first layer uses the same size
    head_channels: int = 256  # pixelcnn: width of the output head
    heads: int = 4  # transformer: attention heads (a divisor of channels)

    def validate(self) -> None:
        check_field(self.kind in PRIOR_KINDS, "prior.kind", self.kind, " or ".join(PRIOR_KINDS))
        for name in ("num_embeddings", "channels", "num_layers", "head_channels", "heads"):
            check_field(getattr(self, name) >= 1, f"prior.{name}", getattr(self, name), ">= 1")
        check_field(self.num_classes >= 0, "prior.num_classes", self.num_classes, ">= 0")
        check_field(self.grid_size >= 0, "prior.grid_size", self.grid_size, ">= 0")
        check_field(self.kernel_size >= 3 and self.kernel_size % 2 == 1, "prior.kernel_size",
                    self.kernel_size, "odd and >= 3")
        check_field(0 <= self.class_dropout < 1, "prior.class_dropout", self.class_dropout, "in [0, 1)")
        check_field(0 <= self.dropout < 1, "prior.dropout", self.dropout, "in [0, 1)")
        if self.kind == "transformer":
            check_field(self.channels % self.heads == 0, "prior.heads", self.heads,
                        f"a divisor of prior.channels {self.channels}")
        # an option the network would not use is refused, not ignored
        unused = {"pixelcnn": {"heads": 4}, "transformer": {"kernel_size": 5, "head_channels": 256}}
        for name, default in unused[self.kind].items():
            check_field(getattr(self, name) == default, f"prior.{name}", getattr(self, name),
                        f"{default} (unused) with prior.kind {self.kind}")


@dataclass
class AudioPriorConfig(WaveNetStack):
    """Architecture of the audio prior: a WaveNet over code sequences (K-way softmax), optionally conditioned
    on the speaker and on the utterance's class (e.g. the digit). The counts come from the VQ-VAE's corpus."""

    num_embeddings: int = 512
    num_speakers: int = 0
    speaker_conditioning: bool = True
    num_classes: int = 0  # classes of the corpus's utterances.tsv (0: none)
    class_conditioning: bool = True
    # training: the class is replaced by a learned "no class" with this probability (classifier-free
    # guidance on what is said needs it > 0)
    class_dropout: float = 0.0
    channels: int = 64
    skip_channels: int = 128
    max_dilation: int = 64  # dilations 1 .. max_dilation, repeated dilation_cycles times
    dilation_cycles: int = 2

    def validate(self) -> None:
        for name in ("num_embeddings", "channels", "skip_channels"):
            check_field(getattr(self, name) >= 1, f"wavenet_prior.{name}", getattr(self, name), ">= 1")
        self.validate_dilations("wavenet_prior")
        for name in ("num_speakers", "num_classes"):
            check_field(getattr(self, name) >= 0, f"wavenet_prior.{name}", getattr(self, name), ">= 0")
        check_field(0 <= self.class_dropout < 1, "wavenet_prior.class_dropout", self.class_dropout,
                    "in [0, 1)")
