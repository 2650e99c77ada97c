"""Learned models built on the DIB-R renderer: the single-image 3D predictor (:mod:`.predictor`)."""
from dibr_core.models.predictor import Predictor, PredictorOutput

__all__ = ["Predictor", "PredictorOutput"]
