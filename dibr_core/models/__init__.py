"""Learned models built on the DIB-R renderer: the single-image 3D predictor (:mod:`.predictor`),
the class-conditional generator (:mod:`.generator`) and the render classifier that judges it
(:mod:`.classifier`)."""
from dibr_core.models.classifier import Classifier
from dibr_core.models.predictor import Predictor, PredictorOutput

__all__ = ["Classifier", "Predictor", "PredictorOutput"]
