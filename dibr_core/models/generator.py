"""Class-conditional generator of textured meshes: a per-category Gaussian over the predictor's
latent code, decoded by the predictor's heads.

The decoder (offset head and UV-texture head on the 642-vertex template) is the single-image
predictor's, trained only through DIB-R renders of the procedural data (2D supervision). The
generator adds, per category c, a Gaussian ``N(mu_c, U_c diag(s_c^2) U_c^T)`` of rank ``k``
fitted to the codes the predictor's encoder gives the category's training renders (a latent
density model in the style of generative latent optimisation: codes first, then their density).
A sample is ``z = relu(mu_c + U_c (temperature * s_c * eps))`` with ``eps ~ N(0, I_k)`` drawn
from a generator seeded by the caller (the encoder's codes are ReLU outputs, so the decoder has
only seen non-negative codes), decoded into vertices, vertex colours and a UV texture, and
repaired by :func:`dibr_core.mesh_repair.untangle` (the decoder folds thin parts through
themselves on some samples; silhouettes, the only supervision, cannot see it); the rare sample
the repair cannot clear is redrawn.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from dibr_core.checks import as_index, check_positive, describe
from dibr_core.mesh_repair import untangle
from dibr_core.models.predictor import Predictor, PredictorOutput

__all__ = ["Generator", "load_generator"]


def _redraw_seed(seed: int, index: int, attempt: int) -> int:
    """Seed of the ``attempt``-th redraw of sample ``index`` of a call with ``seed``."""
    return (int(seed) * 0x9E3779B1 + (index + 1) * 0x85EBCA77 + attempt * 0xC2B2AE3D) % (2 ** 63)


def _check_sample_args(fn: str, n: object, seed: object, temperature: float) -> Tuple[int, int]:
    """(n, seed) as ints after checking n >= 1, seed in [0, 2**64) (what a torch generator takes)
    and a finite temperature >= 0."""
    n_, seed_ = as_index(n), as_index(seed)
    if n_ is None or n_ < 1:
        raise ValueError(f"{fn}(): n must be an int >= 1, got {describe(n)}")
    if seed_ is None or not 0 <= seed_ < 2 ** 64:
        raise ValueError(f"{fn}(): seed must be an int in [0, 2**64), got {describe(seed)}")
    check_positive(fn, "temperature", temperature, allow_zero=True)
    return n_, seed_


class Generator(nn.Module):
    """Latent Gaussians per category + the predictor's decoder.

    Args:
        decoder: the trained :class:`Predictor` (its encoder is not used by the generator and
            its weights are not saved with it).
        categories: category names, the index order of the buffers.
        rank: number of principal directions kept per category.

    Buffers:
        means: (C, D) per-category mean code; bases: (C, D, k) orthonormal principal directions;
        scales: (C, k) standard deviations along them.
    """

    means: torch.Tensor
    bases: torch.Tensor
    scales: torch.Tensor
    MAX_REDRAWS = 4

    def __init__(self, decoder: Predictor, categories: Sequence[str], rank: int = 32) -> None:
        super().__init__()
        if not categories:
            raise ValueError("Generator(): categories must not be empty")
        first = decoder.offset_head[0]
        assert isinstance(first, nn.Linear)
        D = int(first.in_features)
        if not 1 <= rank <= D:
            raise ValueError(f"Generator(): rank must be in [1, {D}], got {rank}")
        self.decoder = decoder
        self.categories: List[str] = list(categories)
        self.rank = int(rank)
        self.meta: Dict[str, object] = {}
        C = len(self.categories)
        self.register_buffer("means", torch.zeros(C, D))
        self.register_buffer("bases", torch.zeros(C, D, rank))
        self.register_buffer("scales", torch.zeros(C, rank))

    @property
    def latent_dim(self) -> int:
        return int(self.means.shape[1])

    def category_index(self, category: Union[str, int]) -> int:
        """Index of a category name (or a checked index)."""
        if isinstance(category, int) and not isinstance(category, bool):
            if not 0 <= category < len(self.categories):
                raise ValueError(f"Generator: category index must be in [0, {len(self.categories)}), got {category}")
            return category
        if category not in self.categories:
            raise ValueError(f"Generator: unknown category {category!r}; expected one of {self.categories}")
        return self.categories.index(str(category))

    def fit(self, codes: Dict[str, torch.Tensor]) -> None:
        """Fit every category's Gaussian to its codes ((N_c, D) each, N_c >= 2) by PCA."""
        for name in self.categories:
            if name not in codes:
                raise ValueError(f"Generator.fit(): no codes for category {name!r}")
            z = codes[name].detach().double()
            if z.dim() != 2 or z.shape[1] != self.latent_dim or z.shape[0] < 2:
                raise ValueError(f"Generator.fit(): codes[{name!r}] must have shape (N >= 2, {self.latent_dim}), "
                                 f"got {tuple(z.shape)}")
            c = self.categories.index(name)
            mu = z.mean(dim=0)
            _, s, vt = torch.linalg.svd(z - mu, full_matrices=False)
            k = min(self.rank, vt.shape[0])
            std = s[:k] / (z.shape[0] - 1) ** 0.5
            self.means[c] = mu.float()
            self.bases[c].zero_()
            self.scales[c].zero_()
            self.bases[c, :, :k] = vt[:k].T.float()
            self.scales[c, :k] = std.float()

    def sample_codes(self, category: Union[str, int], n: int, seed: int = 0, temperature: float = 1.0) -> torch.Tensor:
        """(n, D) codes of one category, deterministic for ``seed`` (an int in [0, 2**64)).
        ``temperature`` scales the spread: a finite number >= 0."""
        n, seed = _check_sample_args("Generator.sample_codes", n, seed, temperature)
        c = self.category_index(category)
        g = torch.Generator().manual_seed(seed)
        eps = torch.randn(n, self.rank, generator=g, dtype=torch.float32)
        z = self.means[c] + (eps * (temperature * self.scales[c])) @ self.bases[c].T
        return torch.relu(z)

    @torch.no_grad()
    def sample(self, category: Union[str, int], n: int = 1, seed: int = 0, temperature: float = 1.0,
               repair: bool = True) -> PredictorOutput:
        """``n`` textured meshes of ``category`` (deterministic for ``seed``): see
        :class:`~dibr_core.models.predictor.PredictorOutput`.

        With ``repair`` (the default) every mesh goes through
        :func:`~dibr_core.mesh_repair.untangle`, which removes the inside-out pockets the decoder
        leaves where a thin part folds through itself (``vertices`` are the repaired ones;
        ``offsets`` stay the decoder's). A sample the repair cannot clear (a crumpled decode,
        about 1 in 500) is redrawn from a seed derived from ``(seed, index, attempt)``, at most
        :attr:`MAX_REDRAWS` times, so sample ``i`` depends only on ``seed`` and ``i``.
        ``repair=False`` gives the raw decoder output of the drawn codes."""
        n, seed = _check_sample_args("Generator.sample", n, seed, temperature)
        codes = self.sample_codes(category, n, seed, temperature).to(self.means.device)
        out = self.decoder.decode(codes)
        if not repair:
            return out
        faces = self.decoder.faces
        fixed = [untangle(v, faces) for v in out.vertices]
        for attempt in range(1, self.MAX_REDRAWS + 1):
            bad = [i for i, (_, report) in enumerate(fixed) if not report.valid]
            if not bad:
                break
            z = torch.cat([self.sample_codes(category, 1, _redraw_seed(seed, i, attempt), temperature) for i in bad])
            redo = self.decoder.decode(z.to(self.means.device))
            for k, i in enumerate(bad):
                fixed[i] = untangle(redo.vertices[k], faces)
                for name in ("colors", "offsets", "texture"):
                    t = getattr(out, name)
                    if t is not None:
                        t[i] = getattr(redo, name)[k]
        return replace(out, vertices=torch.stack([v for v, _ in fixed]))

    def project(self, z: torch.Tensor, category: Union[str, int], limit: float = 2.5) -> torch.Tensor:
        """Pull (B, D) codes towards a category: their coordinates along the category's principal
        directions are clamped to ``limit`` standard deviations; the rest of the code is kept."""
        c = self.category_index(category)
        U, s = self.bases[c], self.scales[c].clamp_min(1e-8)
        coeff = (z - self.means[c]) @ U / s
        clamped = coeff.clamp(-limit, limit)
        return torch.relu(z + ((clamped - coeff) * s) @ U.T)

    def state_for_saving(self) -> Dict[str, object]:
        """Weights without the unused encoder: the decoder heads, the Gaussians and the configs."""
        keep = {k: v for k, v in self.decoder.state_dict().items()
                if not (k.startswith("encoder.") or k.startswith("to_latent."))}
        return {"decoder": keep, "decoder_config": {"image_size": self.decoder.image_size,
                                                    "texture_size": self.decoder.texture_size,
                                                    "normalize_bbox": self.decoder.normalize_bbox},
                "categories": self.categories, "rank": self.rank,
                "means": self.means, "bases": self.bases, "scales": self.scales}

    @classmethod
    def from_saved(cls, state: Dict[str, object]) -> "Generator":
        """Inverse of :meth:`state_for_saving` (float16 tensors are cast back to float32)."""
        dec = Predictor(**state["decoder_config"])  # type: ignore[arg-type]
        missing, unexpected = dec.load_state_dict(state["decoder"], strict=False)  # type: ignore[arg-type]
        bad = [k for k in missing if not (k.startswith("encoder.") or k.startswith("to_latent."))]
        if bad or unexpected:
            raise ValueError(f"Generator.from_saved(): decoder weights do not match (missing {bad}, "
                             f"unexpected {list(unexpected)})")
        gen = cls(dec.eval(), state["categories"], int(state["rank"]))  # type: ignore[arg-type, call-overload]
        for name in ("means", "bases", "scales"):
            getattr(gen, name).copy_(state[name])  # type: ignore[arg-type]
        gen.meta = dict(state.get("meta") or {})  # type: ignore[call-overload]
        return gen.eval()


def load_generator(path: Optional[Union[str, Path]] = None) -> Generator:
    """The generator from a weights file (default: the shipped ``dibr_core/weights/generator.pt``)."""
    p = Path(path) if path is not None else Path(__file__).resolve().parent.parent / "weights" / "generator.pt"
    if not p.is_file():
        raise FileNotFoundError(f"load_generator(): no weights file at {p}")
    state = torch.load(p, map_location="cpu", weights_only=False)
    return Generator.from_saved(state)
