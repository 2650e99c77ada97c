"""Evaluate a learned model: ``python -m dibr_core.eval COMMAND [options]``.

Prints ONE JSON object on stdout (progress goes to stderr; NaN and infinities are written as null).

A command is a module with ``add_arguments(parser)`` (its own options) and ``run(args) -> dict``
(the JSON-ready report); :data:`COMMANDS` lists them, so a new command is one entry there. The
options every command shares (``--data``, ``--split``, ``--seed``, ``--threads``, ``--json``,
``--no-progress``) are added here; ``run`` gets ``args.data`` resolved (default: ``$DIBR_DATA``
or ``~/.cache/dibr/data``) and ``args.progress``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from dibr_core.data.dataset import default_data_dir

__all__ = ["COMMANDS", "main"]

#: command -> (module, one-line help)
COMMANDS: Dict[str, Tuple[str, str]] = {
    "predictor": ("dibr_core.eval.predictor", "the single-image 3D predictor and its baselines on a data split"),
    "generator": ("dibr_core.eval.generator", "the class-conditional generator against held-out shapes"),
    "realmodels": ("dibr_core.eval.realmodels", "the predictor on the real-model set, with the leave-one-out "
                   "real category mean and the input-view silhouette IoU"),
    "fit": ("dibr_core.eval.fit", "reconstruction from multi-view silhouettes: large steps vs the old optimiser"),
}


def _clean(x: Any) -> Any:
    """NaN / inf -> None so the output is strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def _shared_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="dataset root (default: $DIBR_DATA or ~/.cache/dibr/data)")
    p.add_argument("--split", default="test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--json", action="store_true", help="print the JSON object on one line (else indented)")
    p.add_argument("--no-progress", action="store_true")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dibr_core.eval", description=(__doc__ or "").split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    for name, (module, help_line) in COMMANDS.items():
        modules[name] = importlib.import_module(module)
        cmd = sub.add_parser(name, help=help_line, description=(modules[name].__doc__ or "").split("\n")[0])
        _shared_arguments(cmd)
        modules[name].add_arguments(cmd)
    a = p.parse_args(argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    a.data = Path(a.data) if a.data else default_data_dir()
    a.progress = not a.no_progress
    try:
        report = modules[a.command].run(a)
    except ValueError as exc:  # bad options found by the command: one line, exit code 2
        print(f"python -m dibr_core.eval {a.command}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(_clean(report), indent=None if a.json else 2, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
