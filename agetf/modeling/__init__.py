"""Modeling: the Keras model (backbone, pooling, heads) and each head's loss and metrics."""
