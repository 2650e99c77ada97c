"""Batch entry point, runnable both ways:

    blender --background IN.blend --python dibr_blender/batch.py -- fit ARGS
    python -m dibr_blender.batch fit --blend IN.blend ARGS
    python -m dibr_blender.batch image-to-3d ARGS
    python -m dibr_blender.batch generate --category chair --count 9 --seed 1 --output OUT.blend

See ``dibr_blender.cli`` for the arguments and exit codes.
"""
from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script by `blender --python`: make the package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from dibr_blender.cli import main
else:
    from .cli import main

if __name__ == "__main__":
    try:
        import bpy

        inside = bool(bpy.app.binary_path)  # a real Blender executable, not the bpy module
    except ImportError:
        inside = False
    sys.exit(main(inside_blender=inside))
