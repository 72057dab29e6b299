"""Faces followed across a video's sampled frames by box overlap, and each track's smoothed
age and gender.

A face found in a frame joins the track whose last box it overlaps most (intersection over
union at least `min_iou`; each track takes at most one face a frame, the best overlaps
first); a face that overlaps none starts a new track. A track that finds no face for more
than `max_missed` sampled frames in a row ends, so a face hidden for a moment (a turn of
the head, a missed detection) keeps its track. A track's age and female probability are
the means over its frames: a face's age does not change within a video, so the mean is
the steadiest estimate, and it needs four sums, not the track's history.
"""

import dataclasses
from typing import Optional, Sequence

DEFAULT_MIN_IOU = 0.3
# At the default 5 frames a second, a face may vanish for 0.8 s and keep its track.
DEFAULT_MAX_MISSED = 4


def iou(a, b) -> float:
    """Intersection over union of two boxes (left, top, width, height attributes)."""
    width = min(a.left + a.width, b.left + b.width) - max(a.left, b.left)
    height = min(a.top + a.height, b.top + b.height) - max(a.top, b.top)
    intersection = max(0, width) * max(0, height)
    union = a.width * a.height + b.width * b.height - intersection
    return intersection / union if union > 0 else 0.0


@dataclasses.dataclass
class Track:
    """One face followed through a video: when it was seen, its last box, and running sums
    of its predictions (None sums where the model does not predict that)."""

    number: int
    first_time: float
    last_time: float
    box: object
    frames: int = 0
    missed: int = 0
    _sums: dict = dataclasses.field(default_factory=dict)
    _counts: dict = dataclasses.field(default_factory=dict)

    def add(self, time_s: float, box, **values) -> None:
        """Adds one frame's face: its time, box and predictions (age=..., age_low=...,
        age_high=..., female_probability=...; None where not predicted)."""
        self.last_time, self.box, self.missed = time_s, box, 0
        self.frames += 1
        for name, value in values.items():
            if value is not None:
                self._sums[name] = self._sums.get(name, 0.0) + float(value)
                self._counts[name] = self._counts.get(name, 0) + 1

    def mean(self, name: str) -> Optional[float]:
        """The mean of a prediction over the track's frames, or None where none had it."""
        count = self._counts.get(name)
        return self._sums[name] / count if count else None

    @property
    def age(self) -> Optional[float]:
        return self.mean("age")

    @property
    def female_probability(self) -> Optional[float]:
        return self.mean("female_probability")


class FaceTracker:
    """Assigns each frame's faces to tracks (see the module's docstring)."""

    def __init__(self, min_iou: float = DEFAULT_MIN_IOU, max_missed: int = DEFAULT_MAX_MISSED):
        self.min_iou = min_iou
        self.max_missed = max_missed
        self.active = []
        self.ended = []
        self._next_number = 1

    def update(self, time_s: float, boxes: Sequence) -> list:
        """The Track of each box of one sampled frame, in the boxes' order (new tracks for
        boxes that overlap no live track). The caller adds the faces' predictions to them."""
        pairs = sorted(((iou(track.box, box), t, b) for t, track in enumerate(self.active)
                        for b, box in enumerate(boxes)), key=lambda pair: -pair[0])
        assigned, taken = [None] * len(boxes), set()
        for overlap, t, b in pairs:
            if overlap < self.min_iou:
                break
            if assigned[b] is None and t not in taken:
                assigned[b], taken = self.active[t], taken | {t}
        for t, track in enumerate(self.active):
            if t not in taken:
                track.missed += 1
        for b, box in enumerate(boxes):
            if assigned[b] is None:
                assigned[b] = Track(self._next_number, time_s, time_s, box)
                self._next_number += 1
                self.active.append(assigned[b])
        self.ended += [track for track in self.active if track.missed > self.max_missed]
        self.active = [track for track in self.active if track.missed <= self.max_missed]
        return assigned

    def tracks(self) -> list:
        """Every track so far, ended or live, by number."""
        return sorted(self.ended + self.active, key=lambda track: track.number)
