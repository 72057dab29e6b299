"""Serving: SavedModel and TFLite export, face detection and alignment for photos, and the
prediction output file."""
