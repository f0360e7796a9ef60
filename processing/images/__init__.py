"""Images: codec.py turns uploads into pixels and pixels into files (validation, orientation,
metadata stripped); preprocess.py holds the optional edits applied before restoration."""
