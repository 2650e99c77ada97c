"""Procedural ShapeNet-like data: shapes (:mod:`.shapes`) and NMR-style rendered datasets (:mod:`.dataset`)."""
