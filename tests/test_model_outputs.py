"""agetf.modeling.outputs: head outputs and serving outputs unpack into the same faces."""

import numpy as np

from agetf.data import labels
from agetf.modeling import heads
from agetf.modeling import outputs as model_outputs


def test_head_and_serving_outputs_unpack_into_the_same_faces():
    rng = np.random.default_rng(0)
    histograms = rng.dirichlet(np.ones(labels.NUM_AGE_BINS), 3).astype(np.float32)
    ranges = rng.dirichlet(np.ones(labels.NUM_AGE_RANGES), 3).astype(np.float32)
    female = np.array([0.2, 0.5, 0.9], np.float32)
    from_heads = model_outputs.from_heads(
        {"age_histogram": histograms, "age_range": ranges, "gender": female})
    years = np.asarray(heads.predicted_age_years(
        {"age_histogram": histograms, "age_range": ranges}))
    served = model_outputs.from_serving(
        {"age": years, "age_range": ranges, "female_probability": female})
    assert list(from_heads.faces(3)) == list(served.faces(3))
    face = served.face(2)
    assert face.age == float(years[2]) and face.age_range == int(ranges[2].argmax())
    assert face.female_probability == float(female[2])
    np.testing.assert_array_equal(from_heads.age_ranges, ranges.argmax(-1))


def test_a_gender_only_model_has_no_age_and_no_range():
    predicted = model_outputs.from_serving({"female_probability": np.array([0.7], np.float32)})
    assert predicted.ages is None and predicted.age_ranges is None
    (face,) = predicted.faces(1)
    assert (face.age, face.age_range) == (None, None)
    assert abs(face.female_probability - 0.7) < 1e-6
    assert model_outputs.from_heads({"gender": np.array([0.7], np.float32)}).ages is None
