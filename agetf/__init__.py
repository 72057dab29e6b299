"""agetf: face age and gender prediction on TensorFlow."""

# setup.py reads this line (without importing the package, so without TensorFlow).
__version__ = "0.1.0"


class UsageError(ValueError):
    """A setting or an input that cannot work; the message names the flag (or file) and the fix.
    Entry points print it as one line; every other exception keeps its traceback."""
