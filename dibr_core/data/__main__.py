"""``python -m dibr_core.data generate --out DIR --per-category N --split train|val|test [--categories ...]``;
``python -m dibr_core.data realmodels [--out DIR]`` (the real-model evaluation set, :mod:`dibr_core.data.realmodels`);
``python -m dibr_core.data realtrain [--out DIR] [--variants N]`` (real models for training, :mod:`dibr_core.data.realtrain`)."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from dibr_core.data.dataset import DEFAULT_RANDOMIZATION, N_VIEWS, SPLITS, default_data_dir, generate
from dibr_core.data.shapes import CATEGORIES


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dibr_core.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="render procedural shapes into .npz files")
    g.add_argument("--out", default=None, help=f"output folder (default $DIBR_DATA or {default_data_dir()})")
    g.add_argument("--per-category", type=int, default=10)
    g.add_argument("--split", choices=SPLITS, default="train")
    g.add_argument("--categories", nargs="+", choices=CATEGORIES, default=None)
    g.add_argument("--views", type=int, default=N_VIEWS, help="azimuths, 15 degrees apart (default 24)")
    g.add_argument("--start-index", type=int, default=0)
    g.add_argument("--overwrite", action="store_true")
    g.add_argument("--normalize", choices=("diagonal", "longest"), default="diagonal",
                   help="scale the bbox diagonal (default, ShapeNet-like) or the longest side to 1")
    g.add_argument("--textured", action="store_true", help="procedural per-part textures instead of flat colours")
    g.add_argument("--grammar", type=int, choices=(1, 2), default=None,
                   help="shape grammar: 1 (the shipped data set) or 2 (richer parts; dibr_core.data.shapes2). "
                   "Default: 2 for the train split, 1 for val and test (the published evaluation splits)")
    g.add_argument("--randomize", action="store_true",
                   help="domain randomisation of materials, lighting and cameras (dataset.Randomization; "
                   "meant for training renders)")
    g.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    r = sub.add_parser("realmodels", help="build the real-model evaluation set from Debian game data packages")
    r.add_argument("--out", default=None, help=f"data root; writes OUT/realmodels (default {default_data_dir()})")
    r.add_argument("--cache", default=None, help="where the .deb files are downloaded and extracted "
                   "(default $DIBR_DEB_CACHE or ~/.cache/dibr/debian)")
    r.add_argument("--models", nargs="+", default=None, help="only these manifest names (for checking)")
    t = sub.add_parser("realtrain", help="build real training items: Sweet Home 3D furniture and game-package "
                       "airplanes (models disjoint from the realmodels evaluation set)")
    t.add_argument("--out", default=None, help=f"data root; writes OUT/realtrain (default {default_data_dir()})")
    t.add_argument("--cache", default=None, help="where the .deb files are downloaded and extracted "
                   "(default $DIBR_DEB_CACHE or ~/.cache/dibr/debian)")
    t.add_argument("--variants", type=int, default=4, help="render sets per model: the protocol's, then "
                   "randomised ones (default 4)")
    t.add_argument("--limit", type=int, default=None, help="at most N models (for checking)")
    t.add_argument("--kinds", nargs="+", choices=("furniture", "vehicles"), default=["furniture", "vehicles"],
                   help="which models to (re)build (default both; one kind replaces only its categories)")
    t.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    args = parser.parse_args(argv)
    if args.command == "realtrain":
        from dibr_core.data.realtrain import build as build_train

        if args.threads > 0:
            import torch

            torch.set_num_threads(args.threads)
        res = build_train(args.out, args.cache, variants=args.variants, limit=args.limit, kinds=args.kinds)
        print(f"wrote {res['items']} items of {res['models']} real models {res['per_category']} in "
              f"{res['seconds']:.1f} s; skipped {len(res['skipped'])}: {res['skipped']}")
        return 0
    if args.command == "realmodels":
        from dibr_core.data.realmodels import build

        res = build(args.out, args.cache, names=args.models)
        print(f"wrote {res['models']} real models {res['per_category']} in {res['seconds']:.1f} s "
              f"from {res['download_bytes'] / 1e6:.1f} MB of .deb files")
        return 0
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    grammar = args.grammar if args.grammar is not None else (2 if args.split == "train" else 1)
    print(f"grammar {grammar}{', randomised renders' if args.randomize else ''}")
    stats = generate(args.out, args.split, args.per_category, args.categories, n_views=args.views,
                     start_index=args.start_index, overwrite=args.overwrite,
                     normalize=args.normalize, textured=args.textured, grammar=grammar,
                     randomize=DEFAULT_RANDOMIZATION if args.randomize else None)
    out = args.out if args.out is not None else default_data_dir()
    print(f"wrote {int(stats['shapes'])} shapes to {out} in {stats['seconds']:.1f} s "
          f"({stats['seconds_per_shape']:.3f} s per shape: build + occupancy + points + {args.views} views)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
