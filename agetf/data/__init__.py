"""Data: face file names and labels, the TFRecord schema, the converter, synthetic faces, the
tf.data input pipeline, image decoding and augmentation, and the audit of skipped records."""
