"""Data: face file names and labels, the TFRecord schema and a dataset's file names, the
converter, reading image files, synthetic faces, the tf.data input pipeline, image decoding
and augmentation, and the audit of skipped records."""
