"""A batch of predictions unpacked into age in years, age range and female probability.

Two kinds of outputs name the same three things differently: a Keras model's head outputs
(`age_histogram`, `age_range`, `age` as age / 100, `gender`; agetf.modeling.heads) and an
export's serving outputs (`age` in years, `age_range`, `female_probability`;
agetf.serving.export). `from_heads` and `from_serving` read either into one Predicted, so
evaluation, TensorBoard's face grid and agetf.predict read each number the same way.
"""

import dataclasses
from typing import Iterator, Optional

import numpy as np
import tensorflow as tf

from agetf.modeling import heads


@dataclasses.dataclass(frozen=True)
class Face:
    """One face's prediction; None where the model has no such head."""

    age: Optional[float]  # years
    age_range: Optional[int]  # the age_range head's most probable class
    female_probability: Optional[float]
    # The central age interval and the spread, in years (an export's; agetf.modeling.age_intervals).
    age_low: Optional[float] = None
    age_high: Optional[float] = None
    age_std: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class Predicted:
    """A batch's predictions as numpy arrays over its faces; None where the model has no
    such head.

    Attributes:
      ages: float, years (from the preferred age head: histogram, range, regression).
      age_ranges: int, the age_range head's most probable class per face.
      female_probabilities: float, as the model gives them.
      age_lows, age_highs, age_stds: float, years: the central age interval and the spread,
        where an export gives them (a histogram or range head's; agetf.serving.export).
    """

    ages: Optional[np.ndarray]
    age_ranges: Optional[np.ndarray]
    female_probabilities: Optional[np.ndarray]
    age_lows: Optional[np.ndarray] = None
    age_highs: Optional[np.ndarray] = None
    age_stds: Optional[np.ndarray] = None

    def face(self, index: int) -> Face:
        """Face number `index` (from 0) of the batch."""
        return Face(
            age=None if self.ages is None else float(self.ages[index]),
            age_range=None if self.age_ranges is None else int(self.age_ranges[index]),
            female_probability=(None if self.female_probabilities is None
                                else float(self.female_probabilities[index])),
            age_low=_item(self.age_lows, index), age_high=_item(self.age_highs, index),
            age_std=_item(self.age_stds, index))

    def faces(self, count: int) -> Iterator[Face]:
        """The first `count` faces."""
        return (self.face(index) for index in range(count))


def from_heads(outputs) -> Predicted:
    """Unpacks a Keras model's head outputs (tensors or numpy arrays) by head name."""
    years = heads.predicted_age_years({name: tf.convert_to_tensor(value)
                                       for name, value in outputs.items()})
    return _predicted(years, outputs.get("age_range"), outputs.get("gender"))


def from_serving(outputs) -> Predicted:
    """Unpacks an export's named outputs (SavedModel signature or TFLite model, as tensors
    or numpy arrays)."""
    predicted = _predicted(outputs.get("age"), outputs.get("age_range"),
                           outputs.get("female_probability"))
    return dataclasses.replace(predicted, **{
        field: np.asarray(outputs[name]) for field, name in _INTERVAL_OUTPUTS.items()
        if name in outputs})


# Predicted's fields of the export's interval outputs.
_INTERVAL_OUTPUTS = {"age_lows": "age_low", "age_highs": "age_high", "age_stds": "age_std"}


def _item(values, index):
    return None if values is None else float(values[index])


def _predicted(ages, range_probabilities, female_probabilities):
    return Predicted(
        ages=None if ages is None else np.asarray(ages),
        age_ranges=(None if range_probabilities is None
                    else np.argmax(np.asarray(range_probabilities), axis=-1)),
        female_probabilities=(None if female_probabilities is None
                              else np.asarray(female_probabilities)))
