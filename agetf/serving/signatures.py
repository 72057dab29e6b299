"""The export's serving signatures: their names, inputs and outputs, written once.

agetf.serving.export writes SavedModels with these signatures, and agetf.serving.predictors
checks a SavedModel against them; this module imports nothing, so checking a model does not
import Keras.
"""

BYTES_SIGNATURE = "serving_default"  # encoded images (JPEG, PNG...) in
BYTES_INPUT = "images_bytes"
IMAGES_SIGNATURE = "serving_images"  # uint8 RGB images of any size in
IMAGES_INPUT = "images"
# Each signature's input: (name, dtype, shape).
INPUTS = {BYTES_SIGNATURE: (BYTES_INPUT, "string", [None]),
          IMAGES_SIGNATURE: (IMAGES_INPUT, "uint8", [None, None, None, 3])}
AGE_RANGE_LABEL = "age_range_label"  # the predicted range's name, "25-30"
# The outputs at least one of which a model must give to be predicted with.
PREDICTED_OUTPUTS = ("age", "female_probability")
# How sure the age is, where the model has a histogram or range head (agetf.serving.export):
# the central interval's ends, the spread, and the quantiles at 0.5%, 1%, ..., 99.5%.
INTERVAL_OUTPUTS = ("age_low", "age_high", "age_std", "age_quantiles")
