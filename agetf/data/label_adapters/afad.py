"""AFAD (Niu et al., "Ordinal regression with multiple output CNN", 2016): AFAD-Full/AGE/111
(male) and AGE/112 (female) folders of face crops, as the dataset's repository lays them
out. The labels are the folders; there is no label file."""

import os

from agetf.data import image_files, manifest

GENDER_FOLDERS = {"111": "m", "112": "f"}
REASON_NOT_AFAD = "not under AGE/111 or AGE/112"


def rows(config):
    """Rows of every image under INPUT_DIR/AGE/{111,112}/; line = the image's number in
    sorted path order."""
    root = config.input_dirs[0]
    number = 0
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        relative_folder = os.path.relpath(folder, root)
        parts = relative_folder.split(os.sep)
        for name in sorted(files):
            if not name.lower().endswith(image_files.IMAGE_EXTENSIONS):
                continue
            number += 1
            file = name if relative_folder == "." else f"{relative_folder}/{name}"
            ok = len(parts) == 2 and parts[0].isdigit() and parts[1] in GENDER_FOLDERS
            yield manifest.Row(line=number, labels_file=os.path.join(root, "AGE/111|112"),
                               file=file, age=parts[0] if ok else None,
                               gender=GENDER_FOLDERS[parts[1]] if ok else None,
                               skip=None if ok else REASON_NOT_AFAD)
