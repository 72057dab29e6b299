"""Labels of the face datasets people download, as manifest Rows (agetf.data.manifest.Row).

Each module reads one dataset's published label files (or folders) and yields the same Rows a
manifest would; agetf.data.manifest.collect_candidates checks them. `--labels_format` names
the module; docs/converting.md says which files each expects and where its format is
documented. No TensorFlow.
"""

import importlib
import os

from agetf.data import manifest
from agetf.data.convert_config import LABEL_FORMATS as FORMATS  # noqa: F401  (re-exported)
from agetf.data.convert_config import ConversionError


def read_rows(config):
    """The Rows of a conversion's labels: its --labels_format adapter's, else the manifest's.

    Raises:
      ConversionError: missing or unreadable label files, or a bad manifest header.
    """
    if config.labels_format is None:
        return manifest.read_rows(config.labels)
    adapter = importlib.import_module(f"{__name__}.{config.labels_format}")
    return adapter.rows(config)


def labels_path(config, default_name=None):
    """--labels, else input_dir/default_name; ConversionError when it does not exist."""
    path = config.labels or (default_name and os.path.join(config.input_dirs[0], default_name))
    if not path:
        raise ConversionError(f"--labels_format={config.labels_format} needs --labels=FILE; "
                              "see docs/converting.md")
    if not os.path.exists(path):
        raise ConversionError(f"labels {path} do not exist; check --labels "
                              f"(--labels_format={config.labels_format})")
    return path


def csv_files(path, pattern_names, what):
    """[(split or None, file)]: `path` itself, or the files of pattern_names ({file name:
    split}) found in the folder `path`; ConversionError when the folder holds none."""
    if os.path.isfile(path):
        return [(pattern_names.get(os.path.basename(path)), path)]
    found = [(split, os.path.join(path, name)) for name, split in pattern_names.items()
             if os.path.isfile(os.path.join(path, name))]
    if not found:
        raise ConversionError(f"{path} holds no {what} ({', '.join(pattern_names)}); "
                              "check --labels")
    return found
