"""Train (or ``--export``) one of the learned models: ``python -m dibr_core.train COMMAND [options]``.

A command is a module with ``main(argv) -> int`` that parses its own options
(``python -m dibr_core.train COMMAND --help``); :data:`COMMANDS` lists them, so a new command is
one entry there. ``torchrun ... -m dibr_core.train predictor ...`` runs the predictor's
distributed training.
"""
from __future__ import annotations

import importlib
import sys
from typing import Dict, Optional, Sequence, Tuple

__all__ = ["COMMANDS", "main"]

#: command -> (module, one-line help)
COMMANDS: Dict[str, Tuple[str, str]] = {
    "predictor": ("dibr_core.train.predictor", "the single-image 3D predictor (DIB-R's multi-view scheme)"),
    "classifier": ("dibr_core.train.classifier", "the render classifier that judges generated samples"),
    "generator": ("dibr_core.train.generator", "the class-conditional generator on a trained predictor"),
}


def _usage() -> str:
    lines = ["usage: python -m dibr_core.train COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<12}{help_line}" for name, (_, help_line) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    if args[0] not in COMMANDS:
        print(f"{_usage()}\n\npython -m dibr_core.train: unknown command {args[0]!r}", file=sys.stderr)
        return 2
    command: int = importlib.import_module(COMMANDS[args[0]][0]).main(args[1:])
    return command


if __name__ == "__main__":
    sys.exit(main())
