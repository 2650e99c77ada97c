"""Real models for training: furniture from Sweet Home 3D's catalogues and airplanes from the
game packages the evaluation set also draws on (Debian), none of them a model of the evaluation set.

``python -m dibr_core.data realtrain [--out DIR] [--cache DIR] [--variants N] [--kinds ...]``
reads the catalogue file (``PluginFurnitureCatalog.properties``) of every ``.sh3f`` archive of the
``sweethome3d-furniture`` package, keeps the pieces whose catalogue name says they are a chair,
sofa, table, lamp or bench (:data:`RULES`, :func:`category_for`), drops every model that the
real-model evaluation set uses (:data:`dibr_core.data.realmodels.MANIFEST`, so that the two sets
share no model file), adds the airplanes of :data:`VEHICLES` (crrcsim and gl-117 files that the
evaluation set does not use, nor colour variants of those it does) and writes
``<out>/realtrain/<category>/<index:05d>.npz`` in the layout of a procedural split, plus
``<out>/realtrain/licences.json``, ``credits.md`` (the same as a Markdown table,
:func:`credits_markdown`) and a contact sheet per category.

Each model is prepared once (canonical frame, occupancy, surface samples, texture colours at the
corners of a subdivided copy: :func:`dibr_core.data.realmodels.prepare_real_model`) and rendered
``variants`` times (default 4): variant 0 with the data set's protocol, the others with the
training renders' domain randomisation (:class:`dibr_core.data.dataset.Randomization`: cameras,
lighting and a brightness and tint draw per variant), so one model gives ``variants`` items.

The catalogues' licences all permit training (public domain, Creative Commons Attribution 3.0),
and so do the game packages' (GPL-2 / GPL-2+); the licence, copyright and author of every model
are recorded in ``licences.json`` from the package's copyright file (and the catalogue's
``creator`` field). Catalogue pieces with a ``modelRotation`` (a model stored in another frame)
are left out, since the manifest convention (y up, front towards +Z) does not hold for them.
"""
from __future__ import annotations

import json
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from dibr_core.data.realmodels import MANIFEST, RealModel

__all__ = ["SPLIT", "PACKAGE", "RULES", "EXCLUDE", "VEHICLES", "KINDS", "CatalogueEntry", "parse_catalogue", "category_for",
           "evaluation_members", "training_models", "credits_markdown", "build"]

SPLIT = "realtrain"
# The colour copy's longest edge: coarser than the evaluation set's (0.03), since the catalogue's
# models are dense already and rendering the finer copy costs about 5 times as long.
SUBDIVIDE_EDGE = 0.06
PACKAGE = "sweethome3d-furniture"
_FURNITURE = "usr/share/sweethome3d/furniture"

# (category, pattern on the lower-case catalogue name), the first match wins.
RULES: Tuple[Tuple[str, str], ...] = (
    ("lamp", r"\blamp|\blight\b|lamppost|chandelier"),
    ("sofa", r"sofa|couch|settee|futon"),
    ("bench", r"\bbench\b"),
    ("chair", r"chair|\bstool\b|\bseat\b"),
    ("table", r"\btable\b|\bdesk\b"),
)
# Names that match a rule but are not that kind of object as a lone model (wall-mounted lights,
# a car, sports equipment, a table fan).
EXCLUDE = r"wheelchair|seat leon|table fan|tennis bat|workbench|abdominal|wall|track light|flashlight|fluorescent|porch"


@dataclass(frozen=True)
class CatalogueEntry:
    """One piece of a catalogue: its archive (``BlendSwap-CC-0.sh3f``), the model member inside
    it (``blendswap-cc-0/armchair/armchair.obj``), its name, creator and licence (the
    catalogue's), and whether it has a ``modelRotation``."""

    archive: str
    member: str
    name: str
    creator: str
    licence: str
    rotated: bool


def _unescape(value: str) -> str:
    """Java properties escapes (``\\uXXXX``, ``\\:``) in a value."""
    value = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), value)
    return re.sub(r"\\(.)", r"\1", value)


def parse_catalogue(text: str, archive: str) -> List[CatalogueEntry]:
    """The pieces of one ``PluginFurnitureCatalog.properties`` text (``key#N=value`` lines)."""
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!" or "=" not in line:
            continue
        k, v = line.split("=", 1)
        fields[k.strip()] = _unescape(v.strip())
    licence = fields.get("license", "")
    ids = sorted({int(k.split("#", 1)[1]) for k in fields if k.startswith("model#") and k.split("#", 1)[1].isdigit()})
    return [CatalogueEntry(archive, fields[f"model#{i}"].lstrip("/"), fields.get(f"name#{i}", ""),
                           fields.get(f"creator#{i}", ""), licence, f"modelRotation#{i}" in fields) for i in ids]


def category_for(name: str) -> Optional[str]:
    """The category a catalogue name says (:data:`RULES`), or None (no rule, or :data:`EXCLUDE`)."""
    low = name.lower()
    if re.search(EXCLUDE, low):
        return None
    for cat, pattern in RULES:
        if re.search(pattern, low):
            return cat
    return None


def evaluation_members(manifest: Sequence[RealModel] = MANIFEST) -> set:
    """``(archive, member)`` of every Sweet Home 3D model the evaluation manifest uses."""
    out = set()
    for m in manifest:
        if m.package == PACKAGE and "!" in m.path:
            archive, member = m.path.split("!", 1)
            out.add((archive.rsplit("/", 1)[-1], member))
    return out


def training_models(entries: Sequence[CatalogueEntry],
                    manifest: Sequence[RealModel] = MANIFEST) -> List[Tuple[RealModel, CatalogueEntry]]:
    """The entries kept for training, as :class:`RealModel` records (y up, front towards +Z, as
    the evaluation set's Sweet Home 3D models): a category from :func:`category_for`, no
    ``modelRotation``, not used by ``manifest``, each model file once."""
    held = evaluation_members(manifest)
    seen = set()
    out: List[Tuple[RealModel, CatalogueEntry]] = []
    for e in entries:
        cat = category_for(e.name)
        key = (e.archive, e.member)
        if cat is None or e.rotated or key in held or key in seen or not e.member.endswith(".obj"):
            continue
        seen.add(key)
        folder = e.member.split("/")[-2] if "/" in e.member else Path(e.member).stem
        stem = Path(e.archive).stem.lower().replace("-", "_")
        name = re.sub(r"[^a-z0-9_]+", "_", f"sh3dt_{stem}_{folder}".lower())
        archive_dir = Path(e.archive).stem
        out.append((RealModel(name, PACKAGE, f"{_FURNITURE}/{e.archive}!{e.member}", cat, "+x", "+y",
                              note=e.name.lower(), credit=e.creator,
                              copyright_path=f"{archive_dir}/{'/'.join(e.member.split('/')[1:])}"), e))
    return out


def credits_markdown(licences: Dict[str, Dict[str, Any]]) -> str:
    """A Markdown table of the models in ``licences`` (``licences.json``): category, name,
    author, licence, copyright and source file (the attribution the CC-BY models ask for)."""
    rows = ["| category | model | author | licence | copyright | package: file |", "|---|---|---|---|---|---|"]
    for name, lic in sorted(licences.items(), key=lambda kv: (kv[1]["category"], kv[0])):
        cells = [lic["category"], lic["note"], lic["credit"], lic["licence"], lic["copyright"],
                 f"{lic['package']}: {lic['file'].split('usr/share/', 1)[-1]}"]
        rows.append("| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in cells) + " |")
    return "\n".join(rows) + "\n"


_CR = "usr/share/games/crrcsim/objects"
_GL = "usr/share/games/gl-117/models"


def _crrc(stem: str, note: str) -> RealModel:
    """An airplane of crrcsim's objects (AC3D, nose +Z, up +Y: the evaluation set's crrcsim axes)."""
    return RealModel(f"crrct_{stem.lower()}", "crrcsim-data", f"{_CR}/{stem}.ac", "airplane", "+z", "+y", note=note)


def _gl(stem: str, category: str, note: str) -> RealModel:
    """A gl-117 model (3DS, nose -X, up +Z: the evaluation set's gl-117 axes)."""
    return RealModel(f"gl117t_{stem.replace('-', '')}", "gl-117-data", f"{_GL}/{stem}.3ds", category, "-x", "+z",
                     note=note)


# Vehicles for training from the game packages the evaluation set also draws on: other files than
# its own (and no colour or decal variants of them: gl-14b/c/d, PilatusB4_26 are left out), with
# each package's axes as the evaluation manifest sets them. Left out after looking at their
# renders: crrcsim's cape_cod (a flat sheet) and qc01 (a quadcopter), gl-117's gl-117.3ds (the
# game's logo).
VEHICLES: Tuple[RealModel, ...] = tuple(
    [_crrc(stem, "RC model aircraft") for stem in (
        "Angel_S30E", "Crossfire", "Erwin", "Fireworks_C", "Skorpion", "allegro", "apogee", "flexifly_xlm", "gap65",
        "k2", "mav", "melyan_01", "outrage", "quickie01", "sovereign", "supra", "wasabi_wr", "zagi", "zipper")]
    + [_gl("gl-15", "airplane", "fighter"), _gl("gl-21", "airplane", "fighter"), _gl("gl-50", "airplane", "fighter"),
       _gl("transp2", "airplane", "transport aircraft"), _gl("transp4", "airplane", "transport aircraft")]
)
"""Airplanes for training (crrcsim, gl-117); none is a file of the evaluation manifest."""


def _catalogue_entries(tree: Path) -> List[CatalogueEntry]:
    entries: List[CatalogueEntry] = []
    for archive in sorted((tree / _FURNITURE).glob("*.sh3f")):
        with zipfile.ZipFile(archive) as z:
            text = z.read("PluginFurnitureCatalog.properties").decode("latin-1")
        entries += parse_catalogue(text, archive.name)
    return entries


KINDS = ("furniture", "vehicles")


def build(out: Optional[Union[str, Path]] = None, cache: Optional[Union[str, Path]] = None, variants: int = 4,
          limit: Optional[int] = None, kinds: Sequence[str] = KINDS, progress: bool = True) -> Dict[str, Any]:
    """Fetch the packages, choose the models (``"furniture"``: :func:`training_models` of the
    catalogues; ``"vehicles"``: :data:`VEHICLES`) and write ``variants`` items per model into
    ``out/realtrain`` (see the module doc). Building one kind replaces that kind's categories only
    (their items and entries in ``licences.json``). ``limit``: at most this many models (for
    checks). Returns ``{"models", "items", "skipped", "seconds", "per_category"}``."""
    from PIL import Image

    from dibr_core.data.dataset import DEFAULT_RANDOMIZATION, contact_sheet, default_data_dir
    from dibr_core.data.debian_assets import fetch_package, licence_for, package_version, parse_copyright
    from dibr_core.data.mesh_formats import load_model
    from dibr_core.data.realmodels import _model_file, prepare_real_model, real_item_arrays

    if variants < 1:
        raise ValueError(f"build(): variants must be at least 1, got {variants}")
    if not kinds or any(k not in KINDS for k in kinds):
        raise ValueError(f"build(): kinds must be a non-empty subset of {KINDS}, got {list(kinds)}")
    trees: Dict[str, Tuple[Path, Path, Any]] = {}

    def package(name: str) -> Tuple[Path, Path, Any]:
        if name not in trees:
            deb, tree = fetch_package(name, cache)
            trees[name] = (deb, tree, parse_copyright((tree / "usr/share/doc" / name / "copyright")
                                                      .read_text(encoding="utf-8")))
        return trees[name]

    chosen: List[Tuple[RealModel, str]] = []
    if "furniture" in kinds:
        chosen += [(m, e.licence) for m, e in training_models(_catalogue_entries(package(PACKAGE)[1]))]
    if "vehicles" in kinds:
        chosen += [(m, "") for m in VEHICLES]
    chosen = chosen[:limit]
    root = (Path(out) if out is not None else default_data_dir()) / SPLIT
    rebuilt = {m.category for m, _ in chosen}
    licences: Dict[str, Dict[str, Any]] = {}
    if (root / "licences.json").is_file():                 # the other kind's models stay
        licences = {k: v for k, v in json.loads((root / "licences.json").read_text()).items()
                    if v["category"] not in rebuilt}
    if limit is None and root.is_dir():
        for cat in rebuilt:
            for old in (root / cat).glob("*.npz"):
                old.unlink()
    t0 = time.perf_counter()
    counts: Dict[str, int] = {}
    models: Dict[str, int] = {}
    sheets: Dict[str, List[np.ndarray]] = {}
    skipped: Dict[str, str] = {}
    for m, catalogue_licence in chosen:
        deb, tree, stanzas = package(m.package)
        try:
            st = licence_for(stanzas, m.copyright_path or m.path.replace("!", "/"))
            mesh = load_model(_model_file(tree, m), exclude=m.exclude)
            prepared = prepare_real_model(m, mesh, SUBDIVIDE_EDGE)
        except (ValueError, OSError, KeyError) as err:        # an unreadable model is left out, said why
            skipped[m.name] = str(err)[:200]
            continue
        lic: Dict[str, Any] = {"package": m.package, "version": package_version(deb), "file": m.path,
                               "licence": st.licence, "copyright": st.copyright, "category": m.category,
                               "note": m.note, "credit": m.credit}
        if catalogue_licence:
            lic["catalogue_licence"] = catalogue_licence
        items = []
        for k in range(variants):
            index = counts.get(m.category, 0)
            item = real_item_arrays(m, prepared, SPLIT, index, lic, variant=k,
                                    randomize=DEFAULT_RANDOMIZATION if k > 0 else None)
            path = root / m.category / f"{index:05d}.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, **item)
            counts[m.category] = index + 1
            items.append(f"{SPLIT}/{m.category}/{index:05d}.npz")
            if k == 0:
                sheets.setdefault(m.category, []).append(item["images"][3])
        models[m.category] = models.get(m.category, 0) + 1
        licences[m.name] = {**lic, "items": items}
        if progress:
            print(f"{m.name} ({m.category}): {len(mesh.faces)} faces, {variants} items, {st.licence}", flush=True)
    root.mkdir(parents=True, exist_ok=True)
    (root / "licences.json").write_text(json.dumps(licences, indent=2, sort_keys=True) + "\n")
    (root / "credits.md").write_text(credits_markdown(licences))
    for cat, ims in sheets.items():
        Image.fromarray(contact_sheet(ims)).save(root / f"contact_{cat}.png")
    return {"models": sum(models.values()), "items": sum(counts.values()), "skipped": skipped,
            "seconds": time.perf_counter() - t0, "per_category": models}
