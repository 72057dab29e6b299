"""Writing the small files of a model_dir so that a kill at any moment leaves no torn file."""

import csv
import errno
import io
import json
import os
import zipfile

from absl import logging


class DiskFullError(OSError):
    """A write failed because the disk (or the user's quota) is full; the message names the path."""

    def __init__(self, message):
        super().__init__(errno.ENOSPC, message)

    def __str__(self):
        return self.strerror  # the one line, without OSError's "[Errno 28]"


_FULL = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(error):
    """Whether an OSError (or TensorFlow's error text) says the disk or the quota is full."""
    return (getattr(error, "errno", None) in _FULL or "No space left" in str(error)
            or "quota exceeded" in str(error).lower())


def disk_full_error(path, what=None, detail=None):
    """The one-line DiskFullError for a failed write of `path` (`what`: the thing written)."""
    what = what or os.path.basename(path)
    detail = f"; {detail}" if detail else ""
    return DiskFullError(f"the disk holding {path} is full (no space left while writing "
                         f"{what}{detail}); free some space, or use a --model_dir on another "
                         "disk, then rerun the same command to resume")


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def write_text(path, text):
    """Writes `text` to a temporary file beside `path` and renames it into place."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        _remove_quietly(tmp)
        if is_disk_full(error):
            raise disk_full_error(path) from error
        raise


def write_json(path, data):
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path):
    """The parsed JSON at `path`, or None when there is no such file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


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
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}.keras"
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except OSError as error:
        _remove_quietly(tmp)
        if is_disk_full(error):
            raise disk_full_error(path) from error
        raise


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
    import keras

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
                why = f"it does not load ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
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
