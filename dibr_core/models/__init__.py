"""Learned models built on the DIB-R renderer: the single-image 3D predictor (:mod:`.predictor`),
the class-conditional generator (:mod:`.generator`) and the render classifier that judges it
(:mod:`.classifier`), each with its loader, and their checkpoint and weights files
(:mod:`.checkpoints`). Training is in :mod:`dibr_core.train`, evaluation in :mod:`dibr_core.eval`."""
from dibr_core.models.classifier import Classifier
from dibr_core.models.predictor import Predictor, PredictorOutput

__all__ = ["Classifier", "Predictor", "PredictorOutput"]
