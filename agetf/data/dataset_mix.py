"""Several converted datasets in one run: their sizes, and one line that states the mix.

Training draws each face from dataset i with probability weight_i / sum(weights)
(input_pipeline's tf.data.Dataset.sample_from_datasets). An epoch is as many faces as the
datasets' train splits hold together, so one dataset of weight 1 is exactly today's epoch;
--steps_per_epoch overrides it as always.
"""

from agetf import UsageError
from agetf.data import input_pipeline


def split_sizes(input_config, split="train"):
    """The number of records of `split` in each of input_config's datasets, in order."""
    return [input_pipeline.num_examples(source.path, split) for source in input_config.sources]


def train_faces(input_config, batch_size):
    """The faces of one epoch: the train splits' sum; a UsageError when they cannot fill one
    batch of `batch_size`."""
    num_train = sum(split_sizes(input_config))
    if num_train < batch_size:
        raise UsageError(f"the train split has {num_train} images, fewer than "
                         f"--batch_size={batch_size}; lower --batch_size")
    return num_train


def describe(input_config, sizes, batch_size, steps_per_epoch):
    """What one epoch of the mix holds, in one line: each dataset's share and passes."""
    total_weight = sum(source.weight for source in input_config.sources)
    faces = steps_per_epoch * batch_size
    parts = []
    for source, size in zip(input_config.sources, sizes):
        share = source.weight / total_weight
        parts.append(f"{source.path} ({size} train faces, weight {source.weight:g}: "
                     f"{share:.0%} of the draws, {share * faces / max(size, 1):.2f} passes)")
    return (f"Mixing {len(parts)} datasets: {'; '.join(parts)}. One epoch = {steps_per_epoch} "
            f"steps of {batch_size} = {faces} faces (the train splits' sum is {sum(sizes)})")
