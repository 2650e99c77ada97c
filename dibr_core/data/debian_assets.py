"""Debian packages as a source of 3D models: fetching a package's ``.deb`` into a cache
(``apt-get download``, no installation), extracting it (``dpkg-deb -x``), and reading the licence
that the package's machine-readable ``debian/copyright`` file gives a file.

Nothing here runs at import; only :func:`fetch_package` touches the network (through apt).

Packages whose data is reserved for independent evaluation are refused by name
(:data:`FORBIDDEN_PACKAGE_PREFIXES`, :func:`check_package_allowed`), wherever a package name enters.
"""
from __future__ import annotations

import fnmatch
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

__all__ = ["FORBIDDEN_PACKAGE_PREFIXES", "check_package_allowed", "default_cache_dir", "fetch_package",
           "CopyrightStanza", "parse_copyright", "licence_for"]

#: Name prefixes of packages whose models are reserved for independent evaluation: FlightGear,
#: TORCS and Speed Dreams data (and their -data / -aircraft / -base packages) are never fetched.
FORBIDDEN_PACKAGE_PREFIXES: Tuple[str, ...] = ("flightgear", "fgfs", "simgear", "torcs", "speed-dreams",
                                               "speeddreams")


def check_package_allowed(package: str) -> str:
    """Return ``package`` or raise ValueError when it is one of the reserved (forbidden) packages."""
    name = package.strip().lower()
    if not name:
        raise ValueError("check_package_allowed(): empty package name")
    for prefix in FORBIDDEN_PACKAGE_PREFIXES:
        if name.startswith(prefix) or f"-{prefix}" in name:
            raise ValueError(f"check_package_allowed(): package {package!r} is reserved for independent "
                             f"evaluation (flightgear, torcs and speed-dreams data are never used)")
    return package


def default_cache_dir() -> Path:
    """``$DIBR_DEB_CACHE`` if set, else ``~/.cache/dibr/debian`` (downloaded ``.deb`` files and
    their extracted trees, outside git)."""
    env = os.environ.get("DIBR_DEB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "dibr" / "debian"


def fetch_package(package: str, cache: Optional[Union[str, Path]] = None) -> Tuple[Path, Path]:
    """Download ``package``'s ``.deb`` into ``cache`` (unless one is there) and extract it.

    Returns:
        (the ``.deb`` file, the folder it was extracted into: ``cache/<package>/``).
    Raises:
        ValueError for a reserved package; RuntimeError when apt cannot download it (run
        ``apt-get update`` first).
    """
    check_package_allowed(package)
    root = Path(cache) if cache is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    debs = sorted(root.glob(f"{package}_*.deb"))
    if not debs:
        proc = subprocess.run(["apt-get", "download", package], cwd=root, capture_output=True, text=True)
        debs = sorted(root.glob(f"{package}_*.deb"))
        if proc.returncode != 0 or not debs:
            raise RuntimeError(f"fetch_package(): 'apt-get download {package}' failed (exit {proc.returncode}); "
                               f"run 'apt-get update' first. {proc.stderr.strip()[-500:]}")
    deb = debs[-1]
    tree = root / package
    stamp = tree / ".extracted"
    if not stamp.is_file() or stamp.read_text() != deb.name:
        tree.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
        stamp.write_text(deb.name)
    return deb, tree


def package_version(deb: Path) -> str:
    """The version in a ``.deb`` file name ``<package>_<version>_<arch>.deb`` (``%3a`` -> ``:``)."""
    parts = deb.name[:-4].split("_")
    return parts[1].replace("%3a", ":") if len(parts) >= 3 else ""


@dataclass(frozen=True)
class CopyrightStanza:
    """One ``Files:`` stanza of a DEP-5 copyright file: its patterns, copyright and licence name."""

    files: Tuple[str, ...]
    copyright: str
    licence: str


def parse_copyright(text: str) -> List[CopyrightStanza]:
    """The ``Files:`` stanzas of a machine-readable (DEP-5) ``debian/copyright`` text, in order.

    Continuation lines (starting with a space) extend the field; a licence's name is the first
    line of its ``License:`` field (the text after it is not kept).
    """
    stanzas: List[CopyrightStanza] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: Dict[str, List[str]] = {}
        key = ""
        for line in block.split("\n"):
            if not line.strip() or line.startswith("#"):
                continue
            if line[0] in " \t" and key:
                fields[key].append(line.strip())
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = [value.strip()] if value.strip() else []
        if "files" in fields:
            patterns = tuple(p for line in fields["files"] for p in line.split())
            lic = fields.get("license", [""])
            stanzas.append(CopyrightStanza(patterns, "; ".join(x for x in fields.get("copyright", []) if x != "."),
                                           lic[0] if lic else ""))
    return stanzas


def _matches(pattern: str, path: str) -> bool:
    """DEP-5 pattern vs a path: the pattern matches the whole path or a trailing part of it (the
    copyright file names source-tree paths, the package installs them under another prefix)."""
    parts = path.strip("/").split("/")
    return any(fnmatch.fnmatchcase("/".join(parts[i:]), pattern) for i in range(len(parts)))


def licence_for(stanzas: List[CopyrightStanza], path: str) -> CopyrightStanza:
    """The stanza that governs ``path``: the last one with a matching pattern (DEP-5 rule).

    Raises ValueError when no stanza matches (the file's licence is unknown)."""
    found: Optional[CopyrightStanza] = None
    for st in stanzas:
        if any(_matches(p, path) for p in st.files):
            found = st
    if found is None:
        raise ValueError(f"licence_for(): no Files stanza of the copyright file matches {path!r}")
    return found
