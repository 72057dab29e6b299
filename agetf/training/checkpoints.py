"""Resuming safely: which checkpoint of a model_dir reads whole, and whether the run it holds
is the run being asked for (run.json, the run-defining settings)."""

import dataclasses
import os

import tensorflow as tf
from absl import logging

from agetf import UsageError
from agetf.common import files, head_names
from agetf.training import run_files

# What must match between a model_dir and the command that resumes it.
RUN_DEFINING_KEYS = ("backbone", "img_dim", "heads", "alpha")


class CheckpointDamagedError(UsageError):
    """No checkpoint of a model_dir can be read; the message names the damaged files and the fix."""


def one_line(error, limit=200):
    """An exception's first line, shortened, for one-line messages."""
    text = str(error).strip()
    text = text.splitlines()[0] if text else type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def checkpoint_damage(path):
    """Why checkpoint `path` cannot be read, naming the damaged file, or None when it reads.

    Reads every tensor: the reader checks each one's CRC, so a truncated or bit-flipped file is
    found here, before anything is built from the checkpoint.
    """
    try:
        reader = tf.train.load_checkpoint(path)
    except Exception as error:  # noqa: BLE001 - any failure to open the index is damage
        return f"{os.path.basename(path)}.index: {one_line(error)}"
    data = ", ".join(sorted(os.path.basename(p) for p in tf.io.gfile.glob(path + ".data-*")))
    try:
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as error:  # noqa: BLE001 - DataLossError, IndexError (a short read), ...
        return f"{data or os.path.basename(path) + '.data-*'}: {one_line(error)}"
    return None


def restorable_checkpoint(checkpoint_dir, warn=logging.warning):
    """The newest checkpoint in `checkpoint_dir` that reads whole, or None when there is none.

    A damaged newer one is skipped with one `warn` line naming its file and why; when every
    checkpoint is damaged, a CheckpointDamagedError naming them and the fix.
    """
    state = tf.train.get_checkpoint_state(checkpoint_dir)
    if state is None or not state.model_checkpoint_path:
        return None
    paths = list(state.all_model_checkpoint_paths)
    if state.model_checkpoint_path not in paths:
        paths.append(state.model_checkpoint_path)
    damaged = []
    for path in reversed(paths):
        why = checkpoint_damage(path)
        if why is None:
            for skipped, reason in damaged:
                warn(f"skipping the damaged checkpoint {skipped} ({reason}); resuming from "
                     f"{os.path.basename(path)}, the newest one that reads")
            return path
        damaged.append((path, why))
    raise CheckpointDamagedError(
        f"no checkpoint in {checkpoint_dir} can be read: " + "; ".join(
            f"{os.path.basename(p)} ({why})" for p, why in damaged)
        + f"; delete {checkpoint_dir} to start the run over (or restore it from a copy)")


def saved_value(path, name):
    """The integer a checkpoint holds for the tracked variable `name`, or None without it."""
    saved = {key.split("/")[0] for key, _ in tf.train.list_variables(path)}
    if name not in saved:
        return None
    return int(tf.train.load_variable(path, f"{name}/.ATTRIBUTES/VARIABLE_VALUE"))


def saved_optimizer_size(path):
    """How many model variables the optimizer saved in checkpoint `path` trains."""
    return sum(1 for key, _ in tf.train.list_variables(path)
               if key.startswith("optimizer/") and "/_trainable_variables/" in key)


def restore(checkpoint, path, restore_dir, partial=False):
    """Restores `checkpoint` from `path`: a CheckpointDamagedError or a UsageError naming the
    fix when it is damaged after all, or made by a run of another model. `partial`: the
    checkpoint holds more than `checkpoint` restores, on purpose (no warnings about it)."""
    try:
        status = checkpoint.restore(path).assert_existing_objects_matched()
        if partial:
            status.expect_partial()
    except (tf.errors.DataLossError, IndexError) as error:  # damaged after the check
        raise CheckpointDamagedError(
            f"the checkpoint {path} is damaged ({one_line(error)}); delete it (its "
            f"{os.path.basename(path)}.* files) to resume from the one before, or "
            f"delete {restore_dir} to start the run over") from error
    except (ValueError, AssertionError) as error:
        raise UsageError(
            f"the checkpoint {path} does not fit this run "
            f"({str(error).splitlines()[0][:160]}); resume with the flags it was made with "
            "(see flags.txt there) or use a new --model_dir") from error


def run_definition(model_config):
    """The part of a configuration that a resumed run must share with the original."""
    definition = {key: (list(value) if isinstance(value, tuple) else value)
                  for key, value in dataclasses.asdict(model_config).items()
                  if key in RUN_DEFINING_KEYS}
    # The same heads in another order build the same model (outputs are a dict).
    definition["heads"] = list(head_names.in_canonical_order(definition["heads"]))
    return definition


def check_run_definition(model_dir, model_config):
    """Refuses a model_dir whose saved run was made with a different model definition."""
    saved = files.read_json(os.path.join(model_dir, "run.json"))
    if saved is None:
        return
    if isinstance(saved.get("heads"), list):  # older runs saved the heads in the flags' order
        saved["heads"] = list(head_names.in_canonical_order(saved["heads"]))
    wanted = run_definition(model_config)
    differing = [f"{k}: {saved.get(k)!r} in model_dir, {wanted[k]!r} now" for k in wanted
                 if saved.get(k) != wanted[k]]
    if differing:
        raise UsageError(f"--model_dir {model_dir} holds a run with a different model ("
                         + "; ".join(differing) + "); use another --model_dir or the same flags")


def write_run_definition(model_dir, model_config):
    """Records the run-defining settings, checked by every later resume."""
    run_files.write_json(os.path.join(model_dir, "run.json"), run_definition(model_config))
