"""Single-image 3D predictor (DIB-R section 6): RGBA image -> deformed icosphere + vertex colours.

A small strided-conv encoder (GroupNorm + ReLU) maps a (B, 4, 64, 64) RGBA image to a latent
code; an MLP head decodes per-vertex offsets from a 642-vertex icosphere template (level 3,
radius ``template_radius``), and either an MLP head decodes per-vertex colours
(``texture_size == 0``) or a transposed-conv head decodes a UV texture, in which case the vertex
colours are that texture sampled at each vertex's template UVs (averaged over the corners of the
vertex, which differ only on the UV seam), so a textured model has one source of appearance. Offsets are ``offset_scale * tanh(raw)``, so
every vertex stays within ``template_radius + offset_scale * sqrt(3)`` of the origin; colours are
``sigmoid(raw)`` in (0, 1). The heads' last layers start at N(0, 1e-3) with zero bias (as in
DIB-R's ``modelcolor.py``), so an untrained model predicts (almost) the template in grey.

Shape and colour are predicted in the canonical object frame; the camera is given at render time.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Optional, Tuple, Union

import torch
from torch import nn

from dibr_core.mesh import icosphere
from dibr_core.mesh_repair import untangle
from dibr_core.models.checkpoints import CHECKPOINT, run_file
from dibr_core.texture import sample_texture

__all__ = ["Predictor", "PredictorOutput", "TEMPLATE_LEVEL", "coarse_template_faces", "repair_output",
           "load_predictor"]

TEMPLATE_LEVEL = 3  # 642 vertices, 1280 faces (the DIB-R template)


def coarse_template_faces() -> torch.Tensor:
    """(320, 3) int64: the faces of the icosphere one level below the template, over the
    template's first 162 vertices (subdividing an icosphere keeps its vertices first, so they
    are the coarser sphere's): a predicted mesh at a quarter of its faces, for silhouette
    searches where the full mesh's detail does not matter."""
    return icosphere(TEMPLATE_LEVEL - 1)[1]


@dataclass(frozen=True)
class PredictorOutput:
    """Predicted meshes for a batch of B images (V = 642 template vertices).

    Attributes:
        vertices: (B, V, 3) float, template + offsets (bounding-box normalised when the model
            has ``normalize_bbox``), canonical object frame.
        colors: (B, V, 3) float in (0, 1), per-vertex RGB (with a texture head: the texture
            sampled at the vertices' UVs).
        offsets: (B, V, 3) float, the bounded offsets from the template (regularised by the
            Laplacian loss).
        texture: (B, 3, T, T) float in (0, 1) UV texture, or None when the model has no
            texture head (``texture_size == 0``).
    """

    vertices: torch.Tensor
    colors: torch.Tensor
    offsets: torch.Tensor
    texture: Optional[torch.Tensor] = None


def _conv_block(cin: int, cout: int, groups: int = 8) -> nn.Sequential:
    """5x5 stride-2 conv (padding 2) + GroupNorm + ReLU: (B, cin, H, W) -> (B, cout, H/2, W/2)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 5, stride=2, padding=2, bias=False),
                         nn.GroupNorm(groups, cout), nn.ReLU(inplace=True))


class Predictor(nn.Module):
    """Image -> mesh predictor with an icosphere template.

    Args:
        image_size: input height = width (a multiple of 16); 64 in the DIB-R protocol.
        channels: encoder widths of the 4 stride-2 conv blocks.
        latent: size of the latent code.
        hidden: width of the decoder heads' hidden layer.
        template_radius: icosphere radius (DIB-R's template: 0.35).
        offset_scale: bound on each offset coordinate (``offset_scale * tanh``).
        texture_size: side of an optional UV texture head's output (0 = no texture head;
            else a power of two >= 8, decoded by transposed convs from a 4x4 seed).
        normalize_bbox: re-normalise every predicted mesh as the data set normalises its shapes
            (bounding box centred at the origin, its diagonal scaled to 1), differentiably, as
            DIB-R's original code does; this builds the data set's normalisation into the
            model instead of leaving it to be learned.

    Buffers:
        template: (V, 3) float32 template vertices; faces: (F, 3) int64; face_uvs: (F, 3, 2)
        float32 per-corner UVs of the template (for the texture head).
    """

    template: torch.Tensor
    faces: torch.Tensor
    face_uvs: torch.Tensor
    corner_vertex: torch.Tensor
    vertex_corner_count: torch.Tensor

    def __init__(self, image_size: int = 64, channels: tuple = (32, 64, 128, 128), latent: int = 256,
                 hidden: int = 512, template_radius: float = 0.38, offset_scale: float = 0.3,
                 texture_size: int = 0, normalize_bbox: bool = False) -> None:
        super().__init__()
        if image_size % 16 != 0 or image_size <= 0:
            raise ValueError(f"Predictor(): image_size must be a positive multiple of 16, got {image_size}")
        if texture_size != 0 and (texture_size < 8 or texture_size & (texture_size - 1)):
            raise ValueError(f"Predictor(): texture_size must be 0 or a power of two >= 8, got {texture_size}")
        if len(channels) != 4:
            raise ValueError(f"Predictor(): channels must have 4 entries, got {channels}")
        verts, faces, uvs = icosphere(TEMPLATE_LEVEL, radius=template_radius)
        self.register_buffer("template", verts)
        self.register_buffer("faces", faces)
        self.register_buffer("face_uvs", uvs)
        self.image_size = image_size
        self.offset_scale = float(offset_scale)
        self.texture_size = int(texture_size)
        self.normalize_bbox = bool(normalize_bbox)
        n_verts = int(verts.shape[0])
        blocks: List[nn.Module] = []
        cin = 4
        for c in channels:
            blocks.append(_conv_block(cin, int(c)))
            cin = int(c)
        self.encoder = nn.Sequential(*blocks)               # (B, 4, S, S) -> (B, c4, S/16, S/16)
        feat = cin * (image_size // 16) ** 2
        self.to_latent = nn.Sequential(nn.Flatten(), nn.Linear(feat, latent), nn.ReLU(inplace=True))
        self.offset_head = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(inplace=True),
                                         nn.Linear(hidden, n_verts * 3))
        self.color_head: Optional[nn.Sequential] = None
        self.texture_head: Optional[nn.Module] = None
        if not texture_size:
            self.color_head = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(inplace=True),
                                            nn.Linear(hidden, n_verts * 3))
        else:
            # Corner -> vertex averaging for the vertex colours of a textured model.
            corner_vertex = faces.reshape(-1)
            counts = torch.bincount(corner_vertex, minlength=n_verts).clamp_min(1).to(torch.float32)
            self.register_buffer("corner_vertex", corner_vertex, persistent=False)
            self.register_buffer("vertex_corner_count", counts, persistent=False)
            ups: List[nn.Module] = [nn.Linear(latent, 64 * 4 * 4), nn.ReLU(inplace=True), nn.Unflatten(1, (64, 4, 4))]
            size, c = 4, 64
            while size < texture_size:
                cout = max(16, c // 2)
                ups += [nn.ConvTranspose2d(c, cout, 4, stride=2, padding=1), nn.GroupNorm(8, cout), nn.ReLU(inplace=True)]
                size, c = size * 2, cout
            ups.append(nn.Conv2d(c, 3, 3, padding=1))
            self.texture_head = nn.Sequential(*ups)
        for head in (self.offset_head, self.color_head):
            if head is None:
                continue
            last = head[-1]
            assert isinstance(last, nn.Linear)
            nn.init.normal_(last.weight, 0.0, 1e-3)
            nn.init.zeros_(last.bias)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 4, S, S) RGBA in [0, 1] -> (B, latent) code."""
        if images.dim() != 4 or images.shape[1] != 4 or images.shape[2] != self.image_size \
                or images.shape[3] != self.image_size:
            raise ValueError(f"Predictor: images must have shape (B, 4, {self.image_size}, {self.image_size}), "
                             f"got {tuple(images.shape)}")
        out: torch.Tensor = self.to_latent(self.encoder(images))
        return out

    def vertex_colors(self, texture: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, T) UV texture -> (B, V, 3) colours: the texture at each vertex's template UVs."""
        B = texture.shape[0]
        uv = self.face_uvs.reshape(1, -1, 2).expand(B, -1, 2).to(texture.dtype)   # (B, 3F, 2)
        corner = sample_texture(texture, uv.contiguous())                          # (B, 3F, 3)
        n_verts = self.template.shape[0]
        acc = corner.new_zeros(B, n_verts, corner.shape[-1]).index_add_(1, self.corner_vertex, corner)
        return acc / self.vertex_corner_count.to(acc.dtype)[None, :, None]

    def forward(self, images: torch.Tensor) -> PredictorOutput:
        """(B, 4, S, S) RGBA in [0, 1] (channels first) -> :class:`PredictorOutput`."""
        return self.decode(self.encode(images))

    def decode_vertices(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, latent) code -> (vertices (B, V, 3), offsets (B, V, 3)): the shape half of
        :meth:`decode`."""
        B = z.shape[0]
        offsets = self.offset_scale * torch.tanh(self.offset_head(z).view(B, -1, 3))
        verts = self.template[None] + offsets
        if self.normalize_bbox:
            lo, hi = verts.min(dim=1, keepdim=True).values, verts.max(dim=1, keepdim=True).values
            diag = (hi - lo).norm(dim=-1, keepdim=True).clamp_min(1e-6)
            verts = (verts - 0.5 * (lo + hi)) / diag
        return verts, offsets

    def decode(self, z: torch.Tensor) -> PredictorOutput:
        """(B, latent) code -> :class:`PredictorOutput` (the heads; also the generator's decoder)."""
        verts, offsets = self.decode_vertices(z)
        texture: Optional[torch.Tensor] = None
        if self.texture_head is not None:
            texture = torch.sigmoid(self.texture_head(z))
            colors = self.vertex_colors(texture)
        else:
            assert self.color_head is not None
            colors = torch.sigmoid(self.color_head(z).view(z.shape[0], -1, 3))
        return PredictorOutput(verts, colors, offsets, texture)


def repair_output(out: PredictorOutput, faces: torch.Tensor) -> PredictorOutput:
    """``out`` with every mesh's inside-out pockets removed by :func:`dibr_core.mesh_repair.untangle`
    (``vertices`` (B, V, 3) repaired, everything else unchanged; ``faces`` (F, 3) the template's).
    An inference step: a repaired mesh carries no gradient (train on the raw decoder output)."""
    verts = torch.stack([untangle(v, faces)[0] for v in out.vertices]) if out.vertices.shape[0] else out.vertices
    return replace(out, vertices=verts)


def load_predictor(path: Union[str, Path], map_location: str = "cpu") -> Predictor:
    """Rebuild a trained :class:`Predictor` (eval mode) from a run's ``checkpoint.pt`` (or its run
    dir), or from a weights file written by ``python -m dibr_core.train predictor --export``."""
    state = torch.load(run_file(path, CHECKPOINT), map_location=map_location, weights_only=False)
    model = Predictor(**state.get("model_config", {}))
    model.load_state_dict(state["model"])      # float16 weights files are cast to float32 here
    return model.eval()
