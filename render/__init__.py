"""Render synthetic in-betweening sequences (Utah teapot and simple shapes) into HDF5 format v2."""

__version__ = "0.1.0"
