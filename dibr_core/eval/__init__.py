"""Evaluation of the learned models: ``python -m dibr_core.eval COMMAND`` (see :mod:`.__main__`).

:mod:`.predictor` (the single-image 3D predictor), :mod:`.generator` (the class-conditional
generator), :mod:`.baselines` (category mean and medoid), :mod:`.metrics3d` (3D IoU, Chamfer,
F-score) and :mod:`.gen_metrics` (classifier distances, coverage, MMD, diversity). Nothing in the
library, the models or the data imports this package.
"""
