"""Sample quality (FID, KID, inception score, sample diversity) and the discriminator as a
real/fake classifier."""

from __future__ import annotations

import warnings

import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.utilities.data import dim_zero_cat

from trainers.config import ConfigError
from trainers.data import CHUNK
from trainers.evaluator import EvaluatorNet, Features, Logits


class SampleQuality:
    """FID/KID against a fixed real set (its features computed once), IS from the class model, and
    `sample_diversity`: the spread of the fakes' evaluator features (the total variance, the trace
    of their covariance) over that of the real set's. About 1 for a generator as varied as the data,
    near 0 for one whose samples have collapsed to a few images. It reads the features KID already
    keeps, so it costs no forward pass.
    """

    def __init__(self, evaluator: EvaluatorNet, real: torch.Tensor, standard_fid: bool = False,
                 chunk: int = CHUNK):
        device, self.chunk = real.device, chunk
        n = len(real)
        with warnings.catch_warnings():  # KID and IS warn that they keep features: ours are few
            warnings.simplefilter("ignore", UserWarning)
            self.fid = FrechetInceptionDistance(Features(evaluator), reset_real_features=False).to(device)
            self.kid = KernelInceptionDistance(Features(evaluator), subsets=20, subset_size=max(2, n // 2),
                                               reset_real_features=False).to(device)
            self.inception = InceptionScore(Logits(evaluator), splits=5).to(device)
        self.standard = _standard_fid(device) if standard_fid else None
        with torch.no_grad():
            for chunk in real.split(self.chunk):
                self.fid.update(chunk, real=True)
                self.kid.update(chunk, real=True)
                if self.standard is not None:
                    self.standard.update(_to_rgb_uint8(chunk), real=True)
        self.real_spread = _spread(self.kid.real_features)

    @torch.no_grad()
    def __call__(self, fake: torch.Tensor) -> dict[str, float]:
        for metric in self._metrics():
            metric.reset()
        for chunk in fake.split(self.chunk):
            self.fid.update(chunk, real=False)
            self.kid.update(chunk, real=False)
            self.inception.update(chunk)
            if self.standard is not None:
                self.standard.update(_to_rgb_uint8(chunk), real=False)
        inception_mean, inception_std = self.inception.compute()
        result = {
            "fid": float(self.fid.compute()),
            "kid": float(self.kid.compute()[0]),
            "inception_score": float(inception_mean),
            "inception_score_std": float(inception_std),  # over the splits (report 004 gives both)
            "sample_diversity": _spread(self.kid.fake_features) / max(self.real_spread, 1e-12),
        }
        if self.standard is not None:
            result["fid_inception"] = float(self.standard.compute())
        return result

    def _metrics(self):
        return [m for m in (self.fid, self.kid, self.inception, self.standard) if m is not None]


def _spread(features: list[torch.Tensor] | torch.Tensor) -> float:
    """The total variance of a set of feature vectors (the trace of their covariance)."""
    return float(dim_zero_cat(features).double().var(dim=0).sum())


def _to_rgb_uint8(images: torch.Tensor) -> torch.Tensor:
    images = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def _standard_fid(device: torch.device) -> FrechetInceptionDistance:
    """FID with the standard Inception-v3 weights, when torch-fidelity and its weights are local."""
    try:
        return FrechetInceptionDistance(feature=2048, reset_real_features=False).to(device)
    except Exception as err:
        raise ConfigError(
            "standard_fid=true needs the torch-fidelity package and the Inception weights "
            f"(pt_inception-2015-12-05) in torch's hub cache ({err}). Install torch-fidelity and "
            "copy the weights to ~/.cache/torch/hub/checkpoints, or set standard_fid=false.",
            key="standard_fid",
        ) from err


def real_fake_scores(real_scores: torch.Tensor, fake_scores: torch.Tensor,
                     threshold: float | None) -> dict[str, float]:
    """D as a classifier calling held-out real images real (positive) and fresh fakes fake: its accuracy
    overall and on each half, precision, recall and F1 (reports 003 and 004 read them all)."""
    if threshold is None:
        threshold = float((real_scores.mean() + fake_scores.mean()) / 2)
    true_pos = (real_scores > threshold).sum().item()
    false_neg = len(real_scores) - true_pos
    false_pos = (fake_scores > threshold).sum().item()
    true_neg = len(fake_scores) - false_pos
    total = len(real_scores) + len(fake_scores)
    f1_denominator = 2 * true_pos + false_pos + false_neg
    return {
        "d_acc": (true_pos + true_neg) / total,
        "d_acc_real": true_pos / max(len(real_scores), 1),  # = recall
        "d_acc_fake": true_neg / max(len(fake_scores), 1),
        "d_precision": true_pos / (true_pos + false_pos) if true_pos + false_pos else 0.0,
        "d_recall": true_pos / max(true_pos + false_neg, 1),
        "d_f1": 2 * true_pos / f1_denominator if f1_denominator else 0.0,
    }
