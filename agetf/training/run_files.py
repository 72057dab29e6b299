"""The files of a model_dir: written whole (agetf.common.files), so that a kill at any moment
leaves no torn file, with a full disk said in one line naming the fix; and the trained model
read back, a damaged .keras file skipped."""

import csv
import io
import os
import zipfile

import keras
from absl import logging

from agetf.common import files

# What to do when the disk holding a model_dir is full.
FULL_DISK_FIX = ("free some space, or use a --model_dir on another disk, then rerun the same "
                 "command to resume")


def disk_full_error(path, what=None, detail=None):
    """The one-line DiskFullError for a failed write of `path` (`what`: the thing written)."""
    return files.disk_full_error(path, what, detail, fix=FULL_DISK_FIX)


def write_text(path, text):
    """Writes `text` to `path` atomically (agetf.common.files); a full disk is a DiskFullError."""
    with files.disk_full_named(path, fix=FULL_DISK_FIX):
        files.write_text(path, text)


def write_json(path, data):
    """Writes `data` as indented JSON with sorted keys, atomically; see write_text."""
    with files.disk_full_named(path, fix=FULL_DISK_FIX):
        files.write_json(path, data)


def write_history_csv(path, history):
    """One row per epoch, one column per key of `history` (a dict of equal-length lists)."""
    keys = list(history)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(keys)
    for row in zip(*(history[k] for k in keys)):
        writer.writerow(row)
    write_text(path, out.getvalue())


def save_model(model, path):
    """Saves a `.keras` file under a temporary name and renames it, so a kill leaves the old one."""
    with files.disk_full_named(path, fix=FULL_DISK_FIX), files.atomic_path(path) as temporary:
        model.save(temporary)


class NoTrainedModelError(ValueError):
    """A model_dir holds neither best.keras nor final.keras (or neither loads)."""


def keras_file_damage(path):
    """Why the `.keras` file at `path` is damaged (truncated, not a zip, a bad CRC), or None.

    Reads the whole archive (its CRCs), which costs far less than loading the model.
    """
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        return "missing"
    except (zipfile.BadZipFile, EOFError, ValueError) as error:
        size = os.path.getsize(path)
        return f"not a whole .keras zip archive ({size} bytes; truncated or overwritten: {error})"
    except OSError as error:
        return f"unreadable ({error.strerror or error})"
    with archive:
        try:
            bad = archive.testzip()  # the name of the first member whose CRC fails
        except Exception as error:  # noqa: BLE001 - zlib.error, EOFError: a damaged member
            return f"a member does not decompress ({type(error).__name__}: {error})"
    if bad is not None:
        return f"its member {bad} fails its CRC check (bits changed on disk)"
    return None


def trained_model_path(model_dir):
    """best.keras if the run saved one, else final.keras; a one-line error when neither exists."""
    for name in ("best.keras", "final.keras"):
        path = os.path.join(model_dir, name)
        if os.path.exists(path):
            return path
    raise NoTrainedModelError(f"no trained model (best.keras or final.keras) in "
                              f"--model_dir={model_dir}; train first, or point --model_dir at a "
                              "finished run")


def load_trained_model(model_dir, warn=None):
    """Loads best.keras, else final.keras: a damaged one is skipped with one warning line
    (`warn`, default absl's logging.warning); a NoTrainedModelError naming the damaged files and
    the fix when neither loads."""
    warn = warn or logging.warning
    trained_model_path(model_dir)  # the one-line error when neither file exists
    damaged = []
    for name in ("best.keras", "final.keras"):
        path = os.path.join(model_dir, name)
        if not os.path.exists(path):
            continue
        why = keras_file_damage(path)
        if why is None:
            try:
                model = keras.saving.load_model(path, safe_mode=True)
            except Exception as error:  # noqa: BLE001 - any failure to load is reported the same way
                why = (f"it does not load ({type(error).__name__}: "
                       f"{str(error).splitlines()[0][:200]})")
        if why is None:
            if damaged:
                warn(f"{damaged[-1][0]} is damaged ({damaged[-1][1]}); using "
                     f"{path} instead")
            return model
        damaged.append((path, why))
    listed = "; ".join(f"{path} is damaged ({why})" for path, why in damaged)
    raise NoTrainedModelError(
        f"no loadable trained model in --model_dir={model_dir}: {listed}; delete the damaged "
        "file(s) and rerun the training command (it rewrites final.keras from the last checkpoint, "
        "and best.keras from it when missing), or restore them from a copy")
