"""Synthetic faces: deterministic, UTKFace-named, UTKFace-like ages, and age readable from
pixels."""

import os

import numpy as np
from PIL import Image

from agetf.data import names, synthetic


def _read_all(paths):
    return [open(path, "rb").read() for path in paths]


def test_same_seed_writes_identical_files_whatever_the_workers(tmp_path):
    first = synthetic.write_synthetic_faces(str(tmp_path / "a"), count=6, seed=3, size=64)
    second = synthetic.write_synthetic_faces(str(tmp_path / "b"), count=6, seed=3, size=64,
                                             workers=2)
    assert [os.path.basename(p) for p in first] == [os.path.basename(p) for p in second]
    assert _read_all(first) == _read_all(second)
    other = synthetic.write_synthetic_faces(str(tmp_path / "c"), count=6, seed=4, size=64)
    assert _read_all(first) != _read_all(other)


def test_files_are_rgb_jpegs_with_parseable_unique_names(faces_dir):
    files = sorted(os.listdir(faces_dir))
    assert len(files) == len(set(files)) > 0
    for file_name in files:
        assert file_name.endswith(".jpg.chip.jpg")
        labels = names.parse_face_name(file_name)
        assert (0 <= labels.age <= names.MAX_AGE and labels.gender in (0, 1)
                and 0 <= labels.race <= 4)
    with Image.open(os.path.join(faces_dir, files[0])) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (200, 200))


def test_ages_follow_a_utkface_like_distribution():
    ages = synthetic.sample_ages(np.random.default_rng(0), 20000)
    share = lambda low, high: np.mean((ages >= low) & (ages < high))  # noqa: E731
    assert ages.min() == 0 and ages.max() <= synthetic.MAX_AGE
    assert share(20, 36) > 0.4                      # the young-adult bulk
    assert share(0, 6) > 2 * share(10, 16)          # a peak of small children
    assert 0.01 < share(80, 117) < 0.08             # a thin old tail
    assert share(100, 117) > 0


def test_rejects_bad_arguments(tmp_path):
    for kwargs in ({"count": 0}, {"count": 2, "size": 8}):
        try:
            synthetic.write_synthetic_faces(str(tmp_path), **kwargs)
        except ValueError as error:
            assert "\n" not in str(error)
        else:
            raise AssertionError(f"{kwargs} accepted")


def _fit_ridge(features, targets, strength=1.0):
    mean_x, mean_y = features.mean(0), targets.mean()
    centred = features - mean_x
    weights = np.linalg.solve(centred.T @ centred + strength * np.eye(features.shape[1]),
                              centred.T @ (targets - mean_y))
    return lambda x: (x - mean_x) @ weights + mean_y


def test_age_and_gender_are_learnable_from_small_images():
    # A linear model on 16x16 pixels must beat the constant predictor by far; a CNN does better.
    count, train = 500, 400
    rng = np.random.default_rng(11)
    ages, genders, races = synthetic.sample_labels(rng, count)
    pixels = np.stack([
        np.asarray(Image.fromarray(synthetic.render_face(
            int(ages[i]), int(genders[i]), int(races[i]), np.random.default_rng([11, i]), size=64))
            .resize((16, 16), Image.BILINEAR), dtype=np.float64).ravel() / 255.0
        for i in range(count)])
    predict_age = _fit_ridge(pixels[:train], ages[:train].astype(np.float64))
    mae = np.abs(predict_age(pixels[train:]) - ages[train:]).mean()
    constant_mae = np.abs(np.median(ages[:train]) - ages[train:]).mean()
    assert mae < 0.5 * constant_mae, (mae, constant_mae)
    predict_gender = _fit_ridge(pixels[:train], genders[:train].astype(np.float64))
    assert np.mean((predict_gender(pixels[train:]) > 0.5) == genders[train:]) > 0.85
