"""The four uncertainty methods compared in "Is segmentation uncertainty useful?" (Czolbe et al. IPMI 2021).

All share `ResidualUNet` and one interface, so trainer, benchmark and inference treat them alike:
  - `training_loss(image, target, generator=None) -> (loss, metrics)`: image (B, 1, *S) in [0, 1], target (B, *S)
    int64 labels, or (B, A, *S) with A annotators (one is picked per sample; ensemble member m learns annotator
    m mod A, the paper's disjoint annotator sets);
  - `sample_probabilities(image, n, generator=None, *, start=0) -> (n, B, C, *S)` softmax probabilities, computed
    in eval mode whatever the module's mode, without gradients. The noise of a sample (dropout masks, latent draw)
    is shared across the batch, so a volume segmented as batches of slices gives coherent samples when each batch
    is sampled with an identically seeded generator; `start` is the index of the first sample (the ensemble's
    member cycle).
Weights are saved with `toporeg.models.weights.save_model` (architecture = class name, kwargs = `config`); the
ensemble is one module, hence one safetensors file.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..reductions import batch_sum
from .backbone import ResidualEncoder, ResidualUNet

Metrics = dict[str, float]


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Batch-norm running statistics and no training-mode dropout while sampling; the caller's mode is restored."""
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device).to(device=like.device, dtype=like.dtype)


def pick_annotator(image: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None = None,
                   index: int | None = None) -> torch.Tensor:
    """(B, *S) labels from (B, *S) or (B, A, *S): annotator `index` mod A, or one drawn at random per sample."""
    if target.dim() == image.dim() - 1:
        return target.long()
    if target.dim() != image.dim():
        raise ValueError(f"target must be (B, *S) or (B, annotators, *S) for an image {tuple(image.shape)}, "
                         f"got {tuple(target.shape)}")
    n_ann = target.shape[1]
    if index is not None:
        return target[:, index % n_ann].long()
    device = generator.device if generator is not None else target.device
    choice = torch.randint(n_ann, (target.shape[0],), generator=generator, device=device).to(target.device)
    return target[torch.arange(target.shape[0], device=target.device), choice].long()


def soft_dice(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mean soft Dice of the foreground classes (1..C-1), each pooled over the batch and all voxels (batch Dice:
    no 0/0 on slices without the class; a batch split across data-parallel processes is pooled whole, see
    `toporeg.reductions`), averaged over the foreground classes present in the batch's target;
    1 when none is (nothing to reward: the cross-entropy alone then pushes false positives down). Softmax in
    float32 (bf16 autocast safe). A scalar in [0, 1]."""
    c = logits.shape[1]
    p = torch.softmax(logits.float(), dim=1)[:, 1:].transpose(0, 1).flatten(1)             # (C-1, N)
    y = F.one_hot(target, c).movedim(-1, 0)[1:].flatten(1).to(p.dtype)                    # (C-1, N)
    inter, p_sum, size = batch_sum(torch.stack([(p * y).sum(1), p.sum(1), y.sum(1)])).unbind(0)  # whole batch
    dice = (2 * inter + eps) / (p_sum + size + eps)
    present = size > 0
    if not bool(present.any()):
        return torch.ones((), device=logits.device)
    return dice[present].mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float
                      ) -> tuple[torch.Tensor, Metrics]:
    """The one reconstruction loss of all four models: CE + dice_weight · (1 − mean foreground soft Dice).
    The Dice term counters class imbalance (CSF, a small ambiguous structure: a few % of the voxels), which plain
    cross-entropy learns late or never; dice_weight = 0 is CE alone."""
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"target {tuple(target.shape)} does not match the image grid {tuple(logits.shape[2:])}")
    ce = F.cross_entropy(logits, target)
    metrics = {"ce": float(ce.detach())}
    if dice_weight == 0:
        return ce, metrics
    dice = soft_dice(logits, target)
    metrics["dice"] = float(dice.detach())
    return ce + dice_weight * (1.0 - dice), metrics


class SegmentationModel(nn.Module):
    """Common bookkeeping: `config` (constructor kwargs for the model card), `ndim`, `n_classes`, input checks."""

    method = ""

    def __init__(self, ndim: int, n_classes: int, in_channels: int, channels: Sequence[int], norm: str,
                 dice_weight: float = 1.0):
        super().__init__()
        if n_classes < 2:
            raise ValueError("n_classes counts the background too: at least 2")
        if dice_weight < 0:
            raise ValueError("dice_weight must be >= 0 (0: cross-entropy only)")
        self.ndim, self.n_classes, self.in_channels = int(ndim), int(n_classes), int(in_channels)
        self.dice_weight = float(dice_weight)
        self.config: dict = dict(ndim=self.ndim, n_classes=self.n_classes, in_channels=self.in_channels,
                                 channels=[int(c) for c in channels], norm=norm, dice_weight=self.dice_weight)

    @property
    def architecture(self) -> str:
        return type(self).__name__

    @property
    def distinct_samples(self) -> int | None:
        """How many different samples the model can give (sample i repeats sample i mod this); None: unlimited.
        Lets inference skip recomputing repeats (the plain U-Net's one softmax, the ensemble's members)."""
        return None

    def _check(self, image: torch.Tensor) -> None:
        if image.dim() != self.ndim + 2 or image.shape[1] != self.in_channels:
            raise ValueError(f"a {self.ndim}D model takes (B, {self.in_channels}, *S) images, "
                             f"got {tuple(image.shape)}")

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        """CE + dice_weight · (1 − soft Dice): `segmentation_loss`, shared by all four methods."""
        return segmentation_loss(logits, target, self.dice_weight)

    def sample_probabilities(self, image: torch.Tensor, n: int, generator: torch.Generator | None = None, *,
                             start: int = 0) -> torch.Tensor:
        raise NotImplementedError

    def training_loss(self, image: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, Metrics]:
        raise NotImplementedError


class PlainUNet(SegmentationModel):
    """Deterministic U-Net with a softmax output: its uncertainty is the softmax's entropy; all samples are equal."""

    method = "unet"

    def __init__(self, ndim: int = 3, n_classes: int = 2, in_channels: int = 1,
                 channels: Sequence[int] = (16, 32, 64, 128), norm: str = "batch", dice_weight: float = 1.0):
        super().__init__(ndim, n_classes, in_channels, channels, norm, dice_weight)
        self.net = ResidualUNet(ndim, in_channels, n_classes, channels, norm=norm)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, *S)."""
        self._check(image)
        return self.net(image)

    def training_loss(self, image, target, generator=None):
        loss, metrics = self._loss(self(image), pick_annotator(image, target, generator))
        return loss, {"loss": float(loss.detach()), **metrics}

    @property
    def distinct_samples(self) -> int | None:
        return 1

    @torch.no_grad()
    def sample_probabilities(self, image, n, generator=None, *, start=0):
        """The same softmax n times (an expanded view: no copies)."""
        with _eval_mode(self):
            p = torch.softmax(self(image), dim=1)
        return p.unsqueeze(0).expand(n, *p.shape)


class MCDropoutUNet(SegmentationModel):
    """U-Net with channel dropout (p = 0.5) in its decoder, kept on at test time (Gal & Ghahramani 2016)."""

    method = "mcdropout"

    def __init__(self, ndim: int = 3, n_classes: int = 2, in_channels: int = 1,
                 channels: Sequence[int] = (16, 32, 64, 128), norm: str = "batch", dropout: float = 0.5,
                 dice_weight: float = 1.0):
        super().__init__(ndim, n_classes, in_channels, channels, norm, dice_weight)
        if not 0.0 < dropout < 1.0:
            raise ValueError("MC-dropout needs 0 < dropout < 1")
        self.config["dropout"] = float(dropout)
        self.net = ResidualUNet(ndim, in_channels, n_classes, channels, dropout=dropout, norm=norm)

    def forward(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits of one pass; dropout active in training mode only (sampling switches it on explicitly)."""
        self._check(image)
        return self.net.head(self.net.features(image, generator=generator))

    def training_loss(self, image, target, generator=None):
        loss, metrics = self._loss(self(image, generator), pick_annotator(image, target, generator))
        return loss, {"loss": float(loss.detach()), **metrics}

    @torch.no_grad()
    def sample_probabilities(self, image, n, generator=None, *, start=0):
        """n stochastic decoder passes over one deterministic encoding."""
        self._check(image)
        with _eval_mode(self):
            feats = self.net.encode(image)
            return torch.stack([torch.softmax(self.net.head(self.net.decode(
                feats, stochastic=True, generator=generator, shared_noise=True)), dim=1) for _ in range(n)])


class DeepEnsemble(SegmentationModel):
    """Independently initialised U-Nets (4 by default); sample i comes from member (start + i) mod M."""

    method = "ensemble"

    def __init__(self, members: Sequence[PlainUNet] | None = None, *, n_members: int = 4, ndim: int = 3,
                 n_classes: int = 2, in_channels: int = 1, channels: Sequence[int] = (16, 32, 64, 128),
                 norm: str = "batch", dice_weight: float | None = None):
        if members:
            first = members[0].config
            if any(m.config != first for m in members) or not all(isinstance(m, PlainUNet) for m in members):
                raise ValueError("ensemble members must be PlainUNets with identical configurations")
            ndim, n_classes, in_channels, channels, norm = (first["ndim"], first["n_classes"], first["in_channels"],
                                                            first["channels"], first["norm"])
            dice_weight = first.get("dice_weight", 1.0) if dice_weight is None else dice_weight
        dice_weight = 1.0 if dice_weight is None else float(dice_weight)
        super().__init__(ndim, n_classes, in_channels, channels, norm, dice_weight)
        members = list(members) if members else [PlainUNet(ndim, n_classes, in_channels, channels, norm, dice_weight)
                                                 for _ in range(n_members)]
        for m in members:  # one loss definition for the whole ensemble
            m.dice_weight = dice_weight
            m.config["dice_weight"] = dice_weight
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        self.members = nn.ModuleList(members)
        self.config["n_members"] = len(members)

    def training_loss(self, image, target, generator=None):
        """Mean of the members' losses (CE + Dice term each); with several annotators member m learns annotator
        m mod A."""
        parts = [self._loss(m(image), pick_annotator(image, target, generator, index=i))
                 for i, m in enumerate(self.members)]
        loss = torch.stack([p[0] for p in parts]).mean()
        metrics = {"loss": float(loss.detach())}
        for key in parts[0][1]:
            metrics[key] = float(sum(p[1][key] for p in parts) / len(parts))
        metrics.update({f"ce_member{i}": p[1]["ce"] for i, p in enumerate(parts)})
        return loss, metrics

    @property
    def distinct_samples(self) -> int | None:
        return len(self.members)

    @torch.no_grad()
    def sample_probabilities(self, image, n, generator=None, *, start=0):
        self._check(image)
        order = [(start + i) % len(self.members) for i in range(n)]
        with _eval_mode(self):
            probs = {k: torch.softmax(self.members[k](image), dim=1) for k in dict.fromkeys(order)}
        return torch.stack([probs[k] for k in order])


class GaussianEncoder(nn.Module):
    """Axis-aligned Gaussian over the latent from an encoder like the U-Net's, globally average-pooled
    (any input size, unlike a fully connected layer)."""

    def __init__(self, ndim: int, in_channels: int, channels: Sequence[int], latent_dim: int, norm: str):
        super().__init__()
        self.encoder = ResidualEncoder(ndim, in_channels, channels, norm)
        self.to_params = nn.Linear(self.encoder.widths[-1], 2 * latent_dim)
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log standard deviation), each (B, latent)."""
        h = self.encoder(x)[-1].flatten(2).mean(-1)
        mu, log_sigma = self.to_params(h).chunk(2, dim=1)
        return mu, log_sigma.clamp(-10.0, 10.0)


def gaussian_kl(mu_q: torch.Tensor, log_q: torch.Tensor, mu_p: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """KL(q ‖ p) of axis-aligned Gaussians (log standard deviations), summed over the latent: (B,)."""
    var_q, var_p = torch.exp(2 * log_q), torch.exp(2 * log_p)
    return (log_p - log_q + (var_q + (mu_q - mu_p) ** 2) / (2 * var_p) - 0.5).sum(-1)


class ProbabilisticUNet(SegmentationModel):
    """Kohl et al. (NeurIPS 2018): prior net p(z|x), posterior net q(z|x, y), 6-d latent injected before the
    final 1×1 convolutions; loss = reconstruction (cross-entropy, mean over voxels, + dice_weight · (1 − soft
    Dice)) + β·KL(q ‖ p), β = 5e-4 (the paper's)."""

    method = "probunet"

    def __init__(self, ndim: int = 3, n_classes: int = 2, in_channels: int = 1,
                 channels: Sequence[int] = (16, 32, 64, 128), norm: str = "batch", latent_dim: int = 6,
                 beta: float = 5e-4, dice_weight: float = 1.0):
        super().__init__(ndim, n_classes, in_channels, channels, norm, dice_weight)
        self.config.update(latent_dim=int(latent_dim), beta=float(beta))
        self.latent_dim, self.beta = int(latent_dim), float(beta)
        self.net = ResidualUNet(ndim, in_channels, n_classes, channels, latent_channels=latent_dim, norm=norm)
        self.prior = GaussianEncoder(ndim, in_channels, channels, latent_dim, norm)
        self.posterior = GaussianEncoder(ndim, in_channels + n_classes, channels, latent_dim, norm)

    def training_loss(self, image, target, generator=None):
        self._check(image)
        labels = pick_annotator(image, target, generator)
        onehot = F.one_hot(labels, self.n_classes).movedim(-1, 1).to(image.dtype)
        mu_q, log_q = self.posterior(torch.cat([image, onehot], dim=1))
        mu_p, log_p = self.prior(image)
        z = mu_q + torch.exp(log_q) * _randn(tuple(mu_q.shape), generator, mu_q)
        recon, metrics = self._loss(self.net(image, z), labels)
        kl = gaussian_kl(mu_q, log_q, mu_p, log_p).mean()
        loss = recon + self.beta * kl
        return loss, {"loss": float(loss.detach()), **metrics, "kl": float(kl.detach())}

    @torch.no_grad()
    def sample_probabilities(self, image, n, generator=None, *, start=0):
        """n prior samples z = μ(x) + σ(x)·ε; one ε per sample, shared by the batch; the U-Net runs once."""
        self._check(image)
        with _eval_mode(self):
            pre = self.net.head_features(self.net.features(image))
            mu, log_sigma = self.prior(image)
            # one draw per sample, so sample s gets the same ε however the n samples are split into calls
            eps = [_randn((1, self.latent_dim), generator, mu) for _ in range(n)]
            return torch.stack([torch.softmax(self.net.head_from(pre, mu + torch.exp(log_sigma) * e), dim=1)
                                for e in eps])


METHODS: dict[str, type[SegmentationModel]] = {
    cls.method: cls for cls in (PlainUNet, DeepEnsemble, MCDropoutUNet, ProbabilisticUNet)}


def build_segmentation_model(method: str, **kwargs) -> SegmentationModel:
    """A model by uncertainty method name (`unet`, `ensemble`, `mcdropout`, `probunet`)."""
    if method not in METHODS:
        raise ValueError(f"unknown segmentation method '{method}' (known: {', '.join(METHODS)})")
    return METHODS[method](**kwargs)
