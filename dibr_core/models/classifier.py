"""Category classifier of 64 x 64 RGBA renders, the judge of the generator's samples.

Its penultimate features (``feature_dim`` = 128, after global average pooling) stand in for
Inception features, which cannot be had offline: distances between feature distributions are
reported as the *classifier* Fréchet / kernel distances, never as FID / KID.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import torch
from torch import nn

from dibr_core.models.checkpoints import CHECKPOINT, run_file

__all__ = ["Classifier", "load_classifier"]


class Classifier(nn.Module):
    """(B, 4, S, S) RGBA in [0, 1] -> (B, n_classes) logits.

    Four 3x3 conv blocks (GroupNorm, ReLU, stride 2 after the first), global average pooling to
    ``channels[-1]`` features, dropout and a linear layer.

    Args:
        categories: class names, in logit order.
        channels: widths of the conv blocks.
    """

    def __init__(self, categories: Sequence[str], channels: Sequence[int] = (32, 64, 128, 128)) -> None:
        super().__init__()
        if len(categories) < 2:
            raise ValueError(f"Classifier(): need at least 2 categories, got {list(categories)}")
        self.categories = list(categories)
        layers = []
        cin = 4
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(cin, int(c), 3, stride=2 if i > 0 else 1, padding=1, bias=False),
                       nn.GroupNorm(8, int(c)), nn.ReLU(inplace=True)]
            cin = int(c)
        self.body = nn.Sequential(*layers)
        self.feature_dim = cin
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(cin, len(self.categories)))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 4, S, S) -> (B, feature_dim) pooled features."""
        if images.dim() != 4 or images.shape[1] != 4:
            raise ValueError(f"Classifier: images must have shape (B, 4, S, S), got {tuple(images.shape)}")
        out: torch.Tensor = self.body(images).mean(dim=(2, 3))
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(images))
        return out


def load_classifier(path: Union[str, Path]) -> Classifier:
    """A :class:`Classifier` (eval mode, float32) from a run directory, checkpoint or weights file."""
    state = torch.load(run_file(path, CHECKPOINT), map_location="cpu", weights_only=False)
    model = Classifier(state["categories"])
    model.load_state_dict(state["model"])
    return model.float().eval()
