"""Finding faces in ordinary photos and cropping them the way the training crops are framed.

The detector is OpenCV's frontal-face Haar cascade, whose model file ships inside the
opencv-python-headless 4.x wheel (`cv2.data.haarcascades`), so nothing is downloaded
at run time. A Haar box covers brows to chin; UTKFace-style crops show the whole head
with some margin, so each box is enlarged by `margin` (the crop side over the box
side), squared and kept inside the photo. DEFAULT_MARGIN is what `measure_margin`
gives on the synthetic training faces (median 1.33, 10-90% range 1.15-1.44).
"""

import dataclasses

import numpy as np

CASCADE_FILE = "haarcascade_frontalface_default.xml"
DEFAULT_MARGIN = 1.35
DEFAULT_MIN_FACE = 30  # pixels; smaller detections are mostly texture
SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 5


class DetectorUnavailable(RuntimeError):
    """OpenCV or its bundled cascade is missing."""


@dataclasses.dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels: left, top, width, height."""

    left: int
    top: int
    width: int
    height: int

    @property
    def right(self):
        return self.left + self.width

    @property
    def bottom(self):
        return self.top + self.height


def load_detector(cascade_file: str = CASCADE_FILE):
    """OpenCV's bundled Haar cascade; DetectorUnavailable with the install command if missing."""
    try:
        import cv2
    except ImportError:
        raise DetectorUnavailable("face detection needs OpenCV; install it with "
                                  "pip install 'opencv-python-headless>=4.8,<5'") from None
    path = cv2.data.haarcascades + cascade_file
    detector = cv2.CascadeClassifier(path)
    if detector.empty():
        raise DetectorUnavailable(f"OpenCV has no {cascade_file} at {path} (5.x wheels dropped "
                                  "the cascades); install opencv-python-headless>=4.8,<5")
    return detector


def detect_faces(image: np.ndarray, detector=None, min_face: int = DEFAULT_MIN_FACE) -> list:
    """Boxes of the frontal faces in a uint8 RGB image, largest first."""
    import cv2

    detector = detector if detector is not None else load_detector()
    gray = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    found = detector.detectMultiScale(gray, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS,
                                      minSize=(min_face, min_face))
    boxes = [Box(int(x), int(y), int(w), int(h)) for x, y, w, h in found]
    return sorted(boxes, key=lambda box: (-box.width * box.height, box.top, box.left))


def crop_box(box: Box, image_height: int, image_width: int, margin: float = DEFAULT_MARGIN) -> Box:
    """The square training-style crop around a face box: enlarged by margin, shifted inside the photo.

    Where the photo is too small for the whole square, the side shrinks to the photo's
    shorter side, so crops stay square (resizing never stretches a face).
    """
    if margin <= 0:
        raise ValueError(f"margin must be > 0, got {margin}; the default is {DEFAULT_MARGIN}")
    side = int(round(max(box.width, box.height) * margin))
    side = max(1, min(side, image_height, image_width))
    centre_x, centre_y = box.left + box.width / 2, box.top + box.height / 2
    left = int(round(centre_x - side / 2))
    top = int(round(centre_y - side / 2))
    left = min(max(left, 0), image_width - side)
    top = min(max(top, 0), image_height - side)
    return Box(left, top, side, side)


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    """The pixels of image inside box."""
    return image[box.top:box.bottom, box.left:box.right]


def measure_margin(crops, detector=None, min_face: int = DEFAULT_MIN_FACE) -> float | None:
    """Median crop side over detected box side, over training crops with exactly one face.

    Each crop is placed on a grey canvas twice its size first: a face that fills its
    crop sits at the edge of the detector's search window and is often missed.
    """
    detector = detector if detector is not None else load_detector()
    ratios = []
    for image in crops:
        height, width = image.shape[:2]
        canvas = np.full((2 * height, 2 * width, 3), 128, np.uint8)
        canvas[height // 2:height // 2 + height, width // 2:width // 2 + width] = image
        boxes = detect_faces(canvas, detector, min_face)
        if len(boxes) == 1:
            ratios.append(max(height, width) / boxes[0].width)
    return float(np.median(ratios)) if ratios else None


def annotate(image: np.ndarray, boxes, captions):
    """A Pillow image of the photo with each box drawn and its caption above it."""
    from PIL import Image, ImageDraw, ImageFont

    picture = Image.fromarray(np.asarray(image, dtype=np.uint8))
    draw = ImageDraw.Draw(picture)
    line = max(2, round(min(picture.size) / 200))
    font = ImageFont.load_default(size=max(12, min(picture.size) // 30))
    for box, caption in zip(boxes, captions):
        draw.rectangle((box.left, box.top, box.right - 1, box.bottom - 1), outline=(255, 40, 40),
                       width=line)
        text_box = draw.textbbox((0, 0), caption, font=font)
        text_height = text_box[3] - text_box[1] + 2 * line
        y = box.top - text_height if box.top >= text_height else box.bottom
        draw.rectangle((box.left, y, box.left + text_box[2] + 2 * line, y + text_height),
                       fill=(255, 40, 40))
        draw.text((box.left + line, y + line - text_box[1]), caption, fill=(255, 255, 255), font=font)
    return picture
