"""Training of the learned models: ``python -m dibr_core.train COMMAND`` (see :mod:`.__main__`).

:mod:`.predictor` (DIB-R's multi-view scheme for the single-image 3D predictor),
:mod:`.classifier` (the render classifier that judges the generator) and :mod:`.generator`
(the generator's latent Gaussians on a trained predictor). Nothing in the library, the models
or the data imports this package; loading a trained model is in :mod:`dibr_core.models`.
"""
