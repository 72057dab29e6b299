"""Synthetic UTKFace-like face crops, so the whole path runs with no dataset and no network.

Each face is drawn with Pillow: age moves head proportions (big eyes low on a round
face in children), hair grey fraction, wrinkle count and depth, and eye bags, all as
smooth functions of age; gender moves hair length, jaw width, beard and lip colour.
Skin tone, light, background, pose, scale and noise vary independently of the labels.
Files are named `{age}_{gender}_{race}_{17 digits}.jpg.chip.jpg`, like aligned UTKFace.
"""

import datetime
import multiprocessing
import os

import numpy as np
from PIL import Image, ImageDraw

from agetf.data.names import MAX_AGE

JPEG_QUALITY = 90

# UTKFace's race shares (white, black, asian, indian, others) and base skin colours.
_RACE_SHARES = (0.42, 0.19, 0.15, 0.17, 0.07)
_SKIN_RGB = np.array([
    (236, 200, 175), (120, 80, 55), (230, 195, 150), (185, 135, 100), (205, 160, 125),
], dtype=np.float64)
_HAIR_RGB = np.array([(40, 28, 20), (90, 60, 35), (150, 110, 60), (25, 20, 18)], dtype=np.float64)
_GREY_RGB = np.array((215, 215, 215), dtype=np.float64)
_FIRST_DATETIME = datetime.datetime(2017, 1, 1)


def sample_ages(rng, count):
    """Draws `count` ages 0..116 with a UTKFace-like shape: a 0-5 peak, a 20-35 bulk, a thin
    80+ tail."""
    component = rng.choice(4, size=count, p=(0.11, 0.47, 0.38, 0.04))
    ages = np.select(
        [component == 0, component == 1, component == 2],
        [rng.exponential(1.6, count),            # babies and toddlers
         rng.normal(28.0, 5.0, count),           # the young-adult bulk
         rng.uniform(5.0, 80.0, count)],         # everyone else
        rng.uniform(80.0, MAX_AGE + 1.0, count))  # the old tail
    return np.clip(np.floor(ages), 0, MAX_AGE).astype(np.int64)


def sample_labels(rng, count):
    """Draws (age, gender, race) arrays for `count` faces."""
    ages = sample_ages(rng, count)
    genders = rng.integers(0, 2, size=count)
    races = rng.choice(len(_RACE_SHARES), size=count, p=_RACE_SHARES)
    return ages, genders, races


def face_file_name(age, gender, race, index):
    """UTKFace aligned-set name with a unique 17-digit datetime derived from `index`."""
    stamp = _FIRST_DATETIME + datetime.timedelta(seconds=int(index) * 7,
                                                 milliseconds=int(index) % 997)
    digits = stamp.strftime("%Y%m%d%H%M%S") + f"{stamp.microsecond // 1000:03d}"
    return f"{int(age)}_{int(gender)}_{int(race)}_{digits}.jpg.chip.jpg"


def _rgb(values):
    return tuple(int(v) for v in np.clip(np.round(values), 0, 255))


def _age_traits(age):
    """Smooth, monotone functions of age that the renderer draws."""
    growth = min(age, 18.0) / 18.0  # 0 at birth, 1 when grown
    return {
        "growth": growth,
        "grey": float(np.clip((age - 28.0) / 50.0, 0.0, 1.0)) ** 0.8,
        "wrinkles": float(np.clip((age - 22.0) / 55.0, 0.0, 1.0)),
        "sag": float(np.clip((age - 40.0) / 50.0, 0.0, 1.0)),
    }


def _draw_hair(draw, box, colour, gender, traits, rng, back):
    """Long hair falls behind a woman's face (back=True); a man's is a short cap (front)."""
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    volume = 0.25 + 0.75 * traits["growth"]  # babies have little hair
    if back and gender == 1:
        length = bottom + height * (0.15 + 0.25 * volume)
        draw.rounded_rectangle((left - 0.14 * width, top - 0.1 * height,
                                right + 0.14 * width, length),
                               radius=int(0.35 * width), fill=colour)
    if not back:
        recede = 0.12 * traits["sag"] * (1 - gender) * height  # men's hairlines recede
        cap_bottom = top + (0.18 + 0.12 * volume) * height + recede
        draw.chord((left - 0.04 * width, top - 0.12 * height,
                    right + 0.04 * width, cap_bottom + 0.25 * height),
                   180, 360, fill=colour)


def _draw_wrinkles(draw, face, eyes_y, mouth_y, traits, skin, rng):
    """Forehead lines, crow's feet and mouth folds; count and darkness grow with age."""
    amount = traits["wrinkles"]
    if amount <= 0:
        return
    left, top, right, bottom = face
    width = right - left
    colour = _rgb(skin * (0.82 - 0.3 * amount))
    line_width = 1 + int(2.5 * amount)
    for k in range(int(round(1 + 5 * amount))):
        y = top + (0.22 + 0.045 * k) * (bottom - top)
        if y > eyes_y - 0.08 * (bottom - top):
            break
        draw.arc((left + 0.22 * width, y, right - 0.22 * width, y + 0.06 * width), 200, 340,
                 fill=colour, width=line_width)
    crow = int(round(3 * amount))
    for side in (-1, 1):
        x = (left + right) / 2 + side * 0.43 * width
        for k in range(crow):
            dy = (k - (crow - 1) / 2) * 0.035 * width
            draw.line((x, eyes_y + dy, x + side * 0.09 * width, eyes_y + 1.6 * dy),
                      fill=colour, width=line_width)
        fold_x = (left + right) / 2 + side * 0.2 * width
        draw.line((fold_x, mouth_y - 0.14 * width,
                   fold_x + side * 0.05 * width, mouth_y + 0.02 * width),
                  fill=colour, width=line_width)


def _draw_eyes(draw, centre_x, eyes_y, width, traits, skin):
    """Children's eyes are larger and set lower; older eyes gain bags."""
    radius = width * (0.095 - 0.03 * traits["growth"])
    spacing = width * 0.21
    for side in (-1, 1):
        x = centre_x + side * spacing
        draw.ellipse((x - radius * 1.4, eyes_y - radius, x + radius * 1.4, eyes_y + radius),
                     fill=(245, 245, 240))
        draw.ellipse((x - radius * 0.7, eyes_y - radius * 0.7,
                      x + radius * 0.7, eyes_y + radius * 0.7),
                     fill=(60, 40, 30))
        if traits["sag"] > 0:
            bag = _rgb(skin * (0.85 - 0.2 * traits["sag"]))
            draw.arc((x - radius * 1.3, eyes_y,
                      x + radius * 1.3, eyes_y + radius * (1.6 + traits["sag"])),
                     20, 160, fill=bag, width=1 + int(2 * traits["sag"]))
        brow_y = eyes_y - radius * 1.9
        draw.line((x - radius * 1.5, brow_y, x + radius * 1.5, brow_y), fill=(50, 35, 25),
                  width=max(2, int(width * 0.02)))


def render_face(age, gender, race, rng, size=200):
    """Renders one face crop as a uint8 [size, size, 3] array."""
    traits = _age_traits(float(age))
    background = rng.uniform(30, 230, size=3)
    image = Image.new("RGB", (size, size), _rgb(background))
    draw = ImageDraw.Draw(image)

    skin = np.clip(_SKIN_RGB[race] * rng.uniform(0.88, 1.1) + rng.normal(0, 6, 3), 0, 255)
    hair = (_HAIR_RGB[rng.integers(len(_HAIR_RGB))] * (1 - traits["grey"])
            + _GREY_RGB * traits["grey"])
    hair = np.clip(hair + rng.normal(0, 6, 3), 0, 255)

    # Children's faces are rounder; adult men have wider jaws. Sizes are fractions of the crop.
    centre_x = size * (0.5 + rng.uniform(-0.04, 0.04))
    centre_y = size * (0.53 + rng.uniform(-0.04, 0.04))
    scale = size * rng.uniform(0.9, 1.05)
    width = scale * (0.56 + 0.03 * (1 - gender) * traits["growth"])
    height = scale * (0.6 + 0.14 * traits["growth"])
    face = (centre_x - width / 2, centre_y - height / 2,
            centre_x + width / 2, centre_y + height / 2)

    _draw_hair(draw, face, _rgb(hair), gender, traits, rng, back=True)
    draw.rectangle((centre_x - width * 0.2, face[3] - height * 0.1, centre_x + width * 0.2, size),
                   fill=_rgb(skin * 0.9))  # neck
    jaw = width * (0.34 - 0.1 * gender * traits["growth"]) * traits["growth"]
    draw.ellipse(face, fill=_rgb(skin))
    draw.rounded_rectangle((face[0] + (width - 2 * jaw) / 2 - width * 0.15, centre_y,
                            face[2] - (width - 2 * jaw) / 2 + width * 0.15,
                            face[3] + height * 0.02 * traits["sag"]),
                           radius=int(width * (0.3 - 0.12 * (1 - gender) * traits["growth"])),
                           fill=_rgb(skin))
    _draw_hair(draw, face, _rgb(hair), gender, traits, rng, back=False)

    eyes_y = face[1] + height * (0.58 - 0.14 * traits["growth"])
    mouth_y = face[1] + height * (0.82 - 0.06 * traits["growth"])
    _draw_eyes(draw, centre_x, eyes_y, width, traits, skin)
    nose = width * (0.05 + 0.06 * traits["growth"])
    draw.line((centre_x, eyes_y + nose * 0.6, centre_x - nose * 0.3, eyes_y + nose * 2.2),
              fill=_rgb(skin * 0.75), width=2)
    if gender == 0 and age >= 16 and rng.random() < 0.5:
        beard = _rgb(hair * 0.9)
        draw.chord((centre_x - width * 0.38, mouth_y - height * 0.12,
                    centre_x + width * 0.38, face[3] + height * 0.02),
                   0, 180, fill=beard)
    lips = (175, 60, 75) if gender == 1 else _rgb(skin * 0.7)
    mouth_w = width * (0.13 + 0.07 * traits["growth"])
    draw.chord((centre_x - mouth_w, mouth_y - 0.03 * height,
                centre_x + mouth_w, mouth_y + 0.04 * height),
               0, 180, fill=lips)
    _draw_wrinkles(draw, face, eyes_y, mouth_y, traits, skin, rng)
    if traits["sag"] > 0.3:
        for _ in range(int(8 * traits["sag"])):  # age spots
            x, y = (rng.uniform(face[0] + width * 0.2, face[2] - width * 0.2),
                    rng.uniform(face[1] + height * 0.2, mouth_y))
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=_rgb(skin * 0.7))

    image = image.rotate(rng.uniform(-8, 8), resample=Image.BILINEAR, fillcolor=_rgb(background))
    pixels = np.asarray(image, dtype=np.float32)
    light = np.linspace(rng.uniform(0.75, 1.0), rng.uniform(1.0, 1.2), size, dtype=np.float32)
    pixels = pixels * (light[np.newaxis, :, np.newaxis] if rng.random() < 0.5
                       else light[:, np.newaxis, np.newaxis])
    pixels += rng.normal(0, rng.uniform(2, 8), size=pixels.shape).astype(np.float32)
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def _write_one(task):
    output_dir, seed, index, age, gender, race, size = task
    # Each face has its own generator, so output does not depend on how work is split.
    rng = np.random.default_rng([seed, index])
    path = os.path.join(output_dir, face_file_name(age, gender, race, index))
    Image.fromarray(render_face(age, gender, race, rng, size)).save(
        path, format="JPEG", quality=JPEG_QUALITY)
    return path


def write_synthetic_faces(output_dir, count, seed=0, size=200, workers=1):
    """Writes `count` synthetic faces as JPEGs into `output_dir`; returns their paths in order.

    The same seed gives byte-identical files whatever `workers` is.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}")
    os.makedirs(output_dir, exist_ok=True)
    ages, genders, races = sample_labels(np.random.default_rng(seed), count)
    tasks = [(output_dir, seed, i, int(ages[i]), int(genders[i]), int(races[i]), size)
             for i in range(count)]
    if workers <= 1:
        return [_write_one(task) for task in tasks]
    # spawn, not fork: the caller may have TensorFlow's threads running.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return pool.map(_write_one, tasks, chunksize=max(1, count // (workers * 8)))
