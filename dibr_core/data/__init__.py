"""Procedural ShapeNet-like data: shapes (:mod:`.shapes`), NMR-style rendered datasets (:mod:`.dataset`,
``python -m dibr_core.data generate``) and their readers for training and evaluation (:mod:`.loaders`)."""
