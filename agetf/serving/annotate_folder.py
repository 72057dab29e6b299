"""--annotate's folder: where each drawn photo goes, and the checks that no original is
written over."""

import os
from typing import Sequence

from agetf import UsageError
from agetf.data.image_files import IMAGE_EXTENSIONS
from agetf.serving.video_frames import VIDEO_EXTENSIONS


def annotation_path(annotate_dir: str, path: str, used: set) -> str:
    """OUT/<file name>, with -2, -3... added when two inputs share a name; a video's is
    an .avi (Motion JPEG) for an .avi, else an .mp4 (MPEG-4), which OpenCV writes anywhere."""
    stem, extension = os.path.splitext(os.path.basename(path))
    if extension.lower() in VIDEO_EXTENSIONS:
        extension = ".avi" if extension.lower() == ".avi" else ".mp4"
    extension = extension if extension.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS else ".jpg"
    candidate, count = stem + extension, 1
    while candidate in used:
        count += 1
        candidate = f"{stem}-{count}{extension}"
    used.add(candidate)
    return os.path.join(annotate_dir, candidate)


def annotation_paths(annotate_dir: str, images: Sequence[str]) -> list:
    """Each image's annotation_path, in order."""
    used = set()
    return [annotation_path(annotate_dir, path, used) for path in images]


def check_annotate_dir(annotate_dir: str, paths: Sequence[str], images: Sequence[str],
                       outputs: Sequence[str]) -> None:
    """Refuses, in one line (ValueError), an --annotate folder where an original could be
    written over: a folder given as input or one inside it (its annotations would be read
    as inputs next time), the folder of a photo given as input, or one where an output
    already is an input (a link to it)."""
    target = os.path.realpath(annotate_dir)
    for path in paths:
        folder = os.path.realpath(path if os.path.isdir(path)
                                  else os.path.dirname(os.path.abspath(path)))
        if os.path.isdir(path) and os.path.commonpath([target, folder]) == folder:
            where = "the folder" if target == folder else "inside the folder"
            raise UsageError(f"--annotate={annotate_dir} is {where} {path} given as input, "
                             "so the annotated photos would be written over the originals; "
                             "pass a folder outside the inputs")
        if target == folder:
            raise UsageError(f"--annotate={annotate_dir} holds {path}, given as input; pass a "
                             "folder outside the inputs, so that no original is written over")
    inputs = {}
    for image in images:
        inputs.setdefault(_file_identity(image), image)
    inputs.pop(None, None)  # an input gone since it was listed
    for output in outputs:
        original = inputs.get(_file_identity(output))
        if original is not None:
            raise UsageError(f"--annotate={annotate_dir} would write {output}, which is the "
                             f"input {original}, over it; pass a folder outside the inputs")


def _file_identity(path):
    try:
        status = os.stat(path)
    except OSError:  # not there yet (an output), or gone
        return None
    return status.st_dev, status.st_ino
