"""Writing the small files of a model_dir so that a kill at any moment leaves no torn file."""

import csv
import io
import json
import os


def write_text(path, text):
    """Writes `text` to a temporary file beside `path` and renames it into place."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
    model.save(tmp)
    os.replace(tmp, path)


class NoTrainedModelError(ValueError):
    """A model_dir holds neither best.keras nor final.keras."""


def trained_model_path(model_dir):
    """best.keras if the run saved one, else final.keras; a one-line error when neither exists."""
    for name in ("best.keras", "final.keras"):
        path = os.path.join(model_dir, name)
        if os.path.exists(path):
            return path
    raise NoTrainedModelError(f"no trained model (best.keras or final.keras) in "
                              f"--model_dir={model_dir}; train first, or point --model_dir at a "
                              "finished run")
