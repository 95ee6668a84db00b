"""Pixels to model input: display transforms, preprocessing, MR series, the array cache."""
