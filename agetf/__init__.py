"""agetf: face age and gender prediction on TensorFlow."""
