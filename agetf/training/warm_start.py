"""--init_from: a new run starts from a finished run's weights, copied layer by layer by name.

The pretrain-then-fine-tune path: train on dataset A, then start a run on dataset B from A's
best.keras (else final.keras). Every layer but the heads must fit (the same --base_model and
--alpha; --img_dim may differ): a backbone that does not is refused in one line. A head of
this run that A lacks, or has in another shape, starts from fresh weights, and a head of A
that this run lacks is left out, each said in one line: a new head on a pretrained backbone
is the usual reason to fine-tune.
"""

import os

from agetf import UsageError
from agetf.common.head_names import HEADS
from agetf.training import run_files


def weight_shapes(layer):
    """The shapes of a layer's weights (trainable and not), in order."""
    return [tuple(weight.shape) for weight in layer.weights]


def copy_weights_by_name(model, source, init_from):
    """Copies into `model` the weights of `source`'s layers of the same names and shapes.

    Returns:
        (copied, fresh, unused): names of the layers copied, of this model's heads left
        with fresh weights, and of source's heads this model lacks.

    Raises:
        UsageError: a layer other than a head is missing from `source` or has other shapes.
    """
    theirs = {layer.name: layer for layer in source.layers if layer.weights}
    copied, fresh = [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        other = theirs.get(layer.name)
        fits = other is not None and weight_shapes(other) == weight_shapes(layer)
        if fits:
            layer.set_weights(other.get_weights())
            copied.append(layer.name)
        elif layer.name in HEADS:
            fresh.append(layer.name)
        else:
            why = "it has none" if other is None else "its weights have other shapes"
            raise UsageError(f"--init_from={init_from}: this model's {layer.name} layer does not "
                             f"fit that run's ({why}); use that run's --base_model and --alpha")
    ours = {layer.name for layer in model.layers}
    unused = [name for name in theirs if name in HEADS and name not in ours]
    return copied, fresh, unused


def init_from_run(model, init_from, log):
    """Sets `model`'s weights from the finished run in `init_from` and logs what was copied."""
    if not any(os.path.exists(os.path.join(init_from, name))
               for name in ("best.keras", "final.keras")):
        raise UsageError(f"--init_from={init_from} holds no best.keras or final.keras; give the "
                         "--model_dir of a finished run")
    try:
        source = run_files.load_trained_model(init_from)
    except run_files.NoTrainedModelError as error:
        raise UsageError(f"--init_from={init_from}: {error}") from None
    copied, fresh, unused = copy_weights_by_name(model, source, init_from)
    log(f"Initialised from {init_from}: {', '.join(copied)} copied by layer name")
    if fresh:
        log(f"--init_from: head(s) {', '.join(fresh)} not in {init_from}: they start from "
            "fresh weights")
    if unused:
        log(f"--init_from: head(s) {', '.join(unused)} of {init_from} are not in this model: "
            "left out")
    return copied, fresh, unused
