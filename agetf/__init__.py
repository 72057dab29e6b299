"""agetf: face age and gender prediction on TensorFlow."""

# setup.py reads this line (without importing the package, so without TensorFlow).
__version__ = "0.1.0"
