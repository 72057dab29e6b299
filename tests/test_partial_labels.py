"""Age ranges and missing labels: what each head trains on, what the metrics count, and how
the evaluation scores ranged faces (issue 22, section 2)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from agetf.data import dataset_files, input_pipeline, labels, schema
from agetf.data.input_config import InputConfig
from agetf.evaluation import evaluator, range_metrics
from agetf.modeling import heads, label_masks

HEADS = ("age_histogram", "age_range", "age", "gender")


def batch(age_min, age_max, gender, weight=None):
    """Labels as the input pipeline makes them: -1 for an unknown age or gender."""
    age_min, age_max = np.asarray(age_min, np.float32), np.asarray(age_max, np.float32)
    known = age_max >= 0
    age = np.where(known, (age_min + age_max) // 2, -1).astype(np.float32)
    histograms = np.stack([labels.range_histogram(lo, hi) if hi >= 0
                           else np.zeros(labels.NUM_AGE_BINS, np.float32)
                           for lo, hi in zip(age_min.astype(int), age_max.astype(int))])
    result = {"age": age, "age_min": age_min, "age_max": age_max, "age_histogram": histograms,
              "age_range": np.where(known, labels.age_range(np.maximum(age, 0)), -1),
              "gender": np.asarray(gender, np.float32), "race": np.zeros(len(age), np.int32)}
    if weight is not None:
        result["weight"] = np.asarray(weight, np.float32)
    return {key: tf.constant(value) for key, value in result.items()}


def outputs_for(size, seed=0):
    rng = np.random.default_rng(seed)
    histogram = rng.dirichlet(np.ones(labels.NUM_AGE_BINS), size).astype(np.float32)
    ranges = rng.dirichlet(np.ones(labels.NUM_AGE_RANGES), size).astype(np.float32)
    return {"age_histogram": tf.constant(histogram), "age_range": tf.constant(ranges),
            "age": tf.constant(rng.uniform(0.1, 0.9, size).astype(np.float32)),
            "gender": tf.constant(rng.uniform(0.1, 0.9, size).astype(np.float32))}


# -- the range head's target ----------------------------------------------------------------

def _range_target(age_min, age_max, in_tf_data):
    labels_ = {"age": tf.constant([0.0]), "age_min": tf.constant([float(age_min)]),
               "age_max": tf.constant([float(age_max)])}
    if not in_tf_data:
        return label_masks.age_range_target(labels_).numpy()[0]
    data = tf.data.Dataset.from_tensors(labels_).map(label_masks.age_range_target)
    return next(iter(data)).numpy()[0]


@pytest.mark.parametrize("in_tf_data", [False, True])
def test_the_range_target_is_the_overlap_of_the_classes(in_tf_data):
    exact = _range_target(34, 34, in_tf_data)
    np.testing.assert_array_equal(exact, np.eye(17)[labels.age_range(34)])
    decade = _range_target(30, 39, in_tf_data)  # classes 30-35 and 35-40, half each
    np.testing.assert_allclose(decade[[6, 7]], [0.5, 0.5])
    assert decade.sum() == pytest.approx(1.0)
    adience = _range_target(25, 32, in_tf_data)  # 25..29 in class 5, 30..32 in class 6
    np.testing.assert_allclose(adience[[5, 6]], [5 / 8, 3 / 8], rtol=1e-6)
    open_ended = _range_target(70, 100, in_tf_data)  # "70+": 70..100, 80..100 in the last class
    np.testing.assert_allclose(open_ended[[14, 15, 16]], [5 / 31, 5 / 31, 21 / 31], rtol=1e-6)
    np.testing.assert_array_equal(_range_target(-1, -1, in_tf_data), np.zeros(17))


def test_an_exact_age_trains_the_range_head_as_before():
    labels_ = batch([3, 34, 85], [3, 34, 85], [0, 1, 0])
    outputs = outputs_for(3)
    sparse = keras.losses.sparse_categorical_crossentropy(labels_["age_range"],
                                                          outputs["age_range"])
    np.testing.assert_allclose(heads.per_example_losses(labels_, outputs)["age_range"], sparse,
                               rtol=1e-5)


# -- masks and weights in the losses ---------------------------------------------------------

def test_each_head_skips_the_faces_it_has_no_label_for():
    # Exact 30 (female), range 30-39 (gender unknown), unknown age (male).
    labels_ = batch([30, 30, -1], [30, 39, -1], [1, -1, 0])
    losses = {head: loss.numpy() for head, loss in
              heads.per_example_losses(labels_, outputs_for(3)).items()}
    assert losses["age_histogram"][0] > 0 and losses["age_histogram"][1] > 0
    assert losses["age_histogram"][2] == 0 and losses["age_range"][2] == 0
    assert losses["age_range"][1] > 0  # the range head trains on the range's overlap
    # Regression skips the range: its middle would be a made-up age.
    assert losses["age"][0] > 0 and losses["age"][1] == 0 and losses["age"][2] == 0
    assert losses["gender"][0] > 0 and losses["gender"][1] == 0 and losses["gender"][2] > 0


def test_the_sample_weight_multiplies_every_head_loss():
    outputs = outputs_for(2)
    once = heads.per_example_losses(batch([30, 40], [30, 49], [1, 0], weight=[1, 1]), outputs)
    weighted = heads.per_example_losses(batch([30, 40], [30, 49], [1, 0], weight=[2, 0.5]),
                                        outputs)
    for head in HEADS:
        np.testing.assert_allclose(weighted[head], once[head] * [2, 0.5], rtol=1e-6)
    # No weight in the batch (hand-made labels): weight 1.
    plain = heads.per_example_losses(batch([30, 40], [30, 49], [1, 0]), outputs)
    for head in HEADS:
        np.testing.assert_allclose(plain[head], once[head], rtol=1e-6)


def _tiny_model():
    features = keras.Input((4,))
    outputs = {"age_histogram": keras.layers.Dense(101, activation="softmax",
                                                   name="age_histogram")(features),
               "gender": keras.ops.squeeze(keras.layers.Dense(1, activation="sigmoid",
                                                              name="gender")(features), -1)}
    return keras.Model(features, outputs)


def _gradients(model, labels_, features):
    with tf.GradientTape() as tape:
        per_head = heads.per_example_losses(labels_, model(features))
        loss = tf.reduce_mean(heads.total_loss(per_head))
    grads = tape.gradient(loss, model.trainable_variables)
    return per_head, {v.path: g for v, g in zip(model.trainable_variables, grads)}


def test_faces_without_a_gender_teach_the_gender_head_nothing():
    model = _tiny_model()
    features = tf.constant(np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32))
    unknown = batch([20] * 6, [20] * 6, [-1] * 6)
    per_head, grads = _gradients(model, unknown, features)
    assert float(tf.reduce_sum(per_head["gender"])) == 0.0
    for path, grad in grads.items():
        if path.startswith("gender/"):
            assert float(tf.reduce_max(tf.abs(grad))) == 0.0, path
        else:  # the age head still learns from these faces
            assert float(tf.reduce_max(tf.abs(grad))) > 0.0, path
    _, known = _gradients(model, batch([20] * 6, [20] * 6, [1] * 6), features)
    assert float(tf.reduce_max(tf.abs(known["gender/kernel"]))) > 0.0


def test_metrics_count_only_the_faces_with_that_label():
    labels_ = batch([30, 30, 50, -1], [30, 39, 50, -1], [1, -1, 0, -1])
    outputs = outputs_for(4)
    metrics = heads.MetricSet(HEADS)
    metrics.update(labels_, outputs, heads.per_example_losses(labels_, outputs))
    results = metrics.results()
    exact = [0, 2]  # MAE and range accuracy: exact ages only
    years = heads.predicted_age_years(outputs).numpy()
    assert results["mae"] == pytest.approx(np.mean(np.abs(years[exact] - [30, 50])), rel=1e-5)
    hits = (outputs["gender"].numpy()[[0, 2]] > 0.5) == [True, False]
    assert results["gender_accuracy"] == pytest.approx(np.mean(hits))
    per_face = heads.per_example_losses(labels_, outputs)["gender"].numpy()
    assert results["gender_loss"] == pytest.approx(per_face[[0, 2]].mean(), rel=1e-5)
    # A batch with no gender at all leaves gender accuracy untouched.
    unknown = batch([30, 40], [30, 40], [-1, -1])
    none = heads.MetricSet(("gender",))
    gender_only = {"gender": outputs_for(2)["gender"]}
    none.update(unknown, gender_only, heads.per_example_losses(unknown, gender_only))
    assert none._means["gender_accuracy"].count.numpy() == 0


# -- the input pipeline ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def partial_dir(tmp_path_factory):
    """A test split of four faces: exact 34 (weight 2), range 30-39, unknown age, 70+."""
    directory = str(tmp_path_factory.mktemp("partial"))
    jpeg = tf.io.encode_jpeg(np.full((24, 24, 3), 128, np.uint8)).numpy()
    faces = [dict(age=34, gender=1, weight=2.0), dict(age=None, age_min=30, age_max=39,
                                                       gender=None),
             dict(age=None, gender=0), dict(age=None, age_min=70, age_max=100, gender=1)]
    for split in dataset_files.SPLITS:
        path = os.path.join(directory, dataset_files.shard_name("partial", split, 0, 1))
        with tf.io.TFRecordWriter(path) as writer:
            for index, face in enumerate(faces):
                writer.write(schema.make_example(jpeg=jpeg, race=0, filename=f"{index}.jpg",
                                                 height=24, width=24, **face))
    return directory


@pytest.mark.parametrize("age_deviation", [None, 2.0])
def test_the_pipeline_carries_ranges_unknowns_and_weights(partial_dir, age_deviation):
    config = InputConfig(data_dir=partial_dir, img_dim=32, age_deviation=age_deviation)
    _, got = next(iter(input_pipeline.build_dataset(config, "test", 4, training=False)))
    got = {key: value.numpy() for key, value in got.items()}
    np.testing.assert_array_equal(got["age_min"], [34, 30, -1, 70])
    np.testing.assert_array_equal(got["age_max"], [34, 39, -1, 100])
    np.testing.assert_array_equal(got["age"], [34, 34, -1, 85])
    np.testing.assert_array_equal(got["gender"], [1, -1, 0, 1])
    np.testing.assert_array_equal(got["weight"], [2, 1, 1, 1])
    deviation = age_deviation or labels.DEFAULT_AGE_DEVIATION
    np.testing.assert_allclose(got["age_histogram"][1], labels.range_histogram(30, 39, deviation),
                               atol=1e-6)
    np.testing.assert_array_equal(got["age_histogram"][2], np.zeros(labels.NUM_AGE_BINS))
    assert label_masks.age_known(got).numpy().tolist() == [True, True, False, True]
    assert label_masks.age_exact(got).numpy().tolist() == [True, False, False, False]


# -- evaluation ------------------------------------------------------------------------------

def test_ranges_are_scored_inside_and_by_distance_beside_the_constant():
    np.testing.assert_array_equal(range_metrics.distance_to_range([25, 35, 45.5], 30, 39),
                                  [5, 0, 6.5])
    # Exact 30 and 50, range 30-39, 70+ (70-100), unknown age; gender unknown for two.
    labels_ = {key: value.numpy() for key, value in
               batch([30, 50, 30, 70, -1], [30, 50, 39, 100, -1], [1, 0, -1, 1, -1]).items()}
    ages = np.array([32.0, 44.0, 41.0, 75.0, 20.0])
    outputs = {"age_histogram": np.eye(labels.NUM_AGE_BINS, dtype=np.float32)[ages.astype(int)],
               "gender": np.array([0.9, 0.9, 0.9, 0.1, 0.9], np.float32)}
    train_ages = np.array([40, 40, 40, -1])
    report = evaluator.summarize(outputs, labels_, train_ages, np.array([1, 1, 0, -1]))
    assert report["labels"] == {"exact_age": 2, "age_range": 2, "unknown_age": 1,
                                "unknown_gender": 2}
    assert report["metrics"]["mae"] == pytest.approx((2 + 6) / 2)  # exact ages only
    assert report["metrics"]["gender_accuracy"] == pytest.approx(1 / 3)  # 3 known genders
    assert report["constant_baseline"]["constant_age"] == 40  # the unknown age left out
    assert report["constant_baseline"]["mae"] == pytest.approx((10 + 10) / 2)
    ranges = report["age_ranges"]
    assert ranges["count"] == 2
    assert ranges["inside"] == pytest.approx(0.5) and ranges["mean_distance"] == pytest.approx(1)
    assert ranges["constant"] == {"inside": 0.0, "mean_distance": pytest.approx((1 + 30) / 2)}
    assert "age ranges (2 faces): inside 0.500 (constant 0.000), mean distance 1.00 years " \
           "(constant 15.50)" in evaluator.format_report(report)
    assert [row["count"] for row in report["by_gender"]] == [1, 2]  # unknown gender: neither
    assert sum(row["count"] for row in report["by_age_decade"]) == 2
