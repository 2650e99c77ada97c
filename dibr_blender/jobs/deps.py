"""Where torch comes from: the wheels bundled with the extension, or an existing Python environment.

The extension ships a CPU build of torch as wheels (Blender installs them into its shared
extension ``site-packages``). A user with a CUDA GPU may instead point the add-on preferences at
the ``site-packages`` folder of an environment that already holds a CUDA build of torch for the
same Python version as Blender's; ``prepare_import_path`` puts that folder at the front of
``sys.path`` so the next ``import torch`` finds it. Nothing is ever installed here.

No ``bpy`` import: this module is tested with plain Python.
"""
from __future__ import annotations

import importlib.machinery
import os
import sys
from pathlib import Path
from typing import List, Optional

# Folders this module put on sys.path (so a changed preference can take the old one out again).
_added: List[str] = []


def _normalise(python_path: str) -> Optional[Path]:
    text = python_path.strip()
    if not text:
        return None
    # Blender-relative paths ("//...") make no sense for an environment; "~" is expanded.
    return Path(os.path.expanduser(text)).resolve()


def _torch_binary_matches(torch_dir: Path) -> bool:
    """True when torch's compiled core (``torch/_C*``) fits this interpreter's extension suffixes."""
    names = {p.name for p in torch_dir.glob("_C*")}
    if not names:
        return True  # an unusual layout: let the import itself decide
    return any(f"_C{suffix}" in names for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def check_python_path(python_path: str) -> Optional[str]:
    """Validate the folder without touching ``sys.path``: None when usable (or empty), else why not."""
    path = _normalise(python_path)
    if path is None:
        return None
    if not path.exists():
        return f"Python path {path} does not exist"
    if not path.is_dir():
        return f"Python path {path} is not a folder (choose the site-packages folder of the environment)"
    torch_dir = path / "torch"
    if not (torch_dir / "__init__.py").is_file():
        hint = ""
        for sub in sorted(path.glob("lib*/python3*/site-packages")) + sorted(path.glob("Lib/site-packages")):
            if (sub / "torch" / "__init__.py").is_file():
                hint = f"; did you mean {sub}?"
                break
        return f"No torch package in {path} (choose the site-packages folder that holds torch){hint}"
    if not _torch_binary_matches(torch_dir):
        major, minor = sys.version_info[:2]
        return (f"torch in {path} was built for another Python version; Blender runs Python "
                f"{major}.{minor}, so the environment must use Python {major}.{minor} too")
    return None


def torch_origin() -> Optional[str]:
    """The folder torch was imported from, or None while torch is not imported."""
    mod = sys.modules.get("torch")
    file = getattr(mod, "__file__", None) if mod is not None else None
    if not file:
        return None
    return str(Path(file).resolve().parent.parent)


def _pin_blender_numpy() -> None:
    """Import Blender's own numpy before the external folder goes first on ``sys.path``.

    The environment may hold numpy 2, which would break Blender and other add-ons (they share one
    interpreter and Blender ships numpy 1.x); once numpy is imported, the external copy is never used.
    """
    if "numpy" in sys.modules:
        return
    try:
        import numpy  # noqa: F401
    except Exception:  # noqa: BLE001 - no numpy at all is fine here
        pass


def prepare_import_path(python_path: str) -> Optional[str]:
    """Make ``python_path`` (a site-packages folder holding torch) the first place imports look.

    Returns None on success or when ``python_path`` is empty (then any folder added earlier by
    this function is removed again and the bundled torch is used), else a message for the user.
    The folder is inserted at the front of ``sys.path`` once; calling again is harmless. Blender's
    numpy is imported first so that a numpy in the folder never shadows it. A torch that is
    already imported stays in use until Blender restarts, which the message says.
    """
    error = check_python_path(python_path)
    if error is not None:
        return error
    path = _normalise(python_path)
    for old in list(_added):
        if path is None or old != str(path):
            while old in sys.path:
                sys.path.remove(old)
            _added.remove(old)
    if path is None:
        return None
    entry = str(path)
    _pin_blender_numpy()
    if entry not in sys.path:
        sys.path.insert(0, entry)
    if entry not in _added:
        _added.append(entry)
    origin = torch_origin()
    if origin is not None and Path(origin) != path:
        return (f"torch is already loaded from {origin}; restart Blender to use the torch in {path}")
    return None
