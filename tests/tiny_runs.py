"""Tiny models and training runs shared by the test modules (imported, never collected).

Small enough for a 2-core CI machine: 32 px, MobileNetV2 x0.35, a few steps.
"""

import dataclasses
import hashlib

import keras
import tensorflow as tf

from agetf import config
from agetf.data.input_config import InputConfig
from agetf.modeling.model_config import ModelConfig
from agetf.training import checkpoints
from agetf.training import distributed_trainer as trainer_lib

ALL_HEADS = ("age_histogram", "age_range", "age", "gender")
RUNTIME_FIELDS = tuple(field.name for field in dataclasses.fields(config.RuntimeConfig))


def calibrate_batchnorm(model, images):
    """Sets every BatchNormalization's moving statistics to those of `images`.

    An untrained backbone in inference mode shrinks activations to ~1e-11, which would
    make output comparisons pass trivially.
    """
    norms = [layer for layer in model.get_layer("backbone").layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.momentum = 0.0
    model(images, training=True)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def tiny_config(data_dir, model_dir, **overrides):
    """A run small enough for a 2-core CI machine: 32 px, MobileNetV2 x0.35, a few steps."""
    model_fields = {k: overrides.pop(k) for k in ("heads", "img_dim", "backbone") if k in overrides}
    model = ModelConfig(backbone=model_fields.get("backbone", "MobileNetV2"),
                               img_dim=model_fields.get("img_dim", 32),
                               heads=model_fields.get("heads", ALL_HEADS), alpha=0.35,
                               weights="none", batchnorm_momentum=0.9)
    runtime = dict(steps_per_loop=2, strategy="default", mixed_precision="float32")
    runtime.update({k: overrides.pop(k) for k in RUNTIME_FIELDS if k in overrides})
    settings = dict(model_dir=str(model_dir), model=model,
                    input=InputConfig(data_dir=data_dir, img_dim=model.img_dim,
                                             shuffle_buffer=64, seed=1),
                    epochs=2, batch_size=16, lr=1e-3, steps_per_epoch=3,
                    runtime=config.RuntimeConfig(**runtime), summary_images=4, verbose=False)
    settings.update(overrides)
    return config.TrainConfig(**settings)


def train(run_config, strategy=None):
    trainer = trainer_lib.Trainer(run_config, strategy=strategy)
    checkpoints.write_run_definition(run_config.model_dir, run_config.model)
    history = trainer.fit()
    return trainer, history


def sha1(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def scalar_values(accumulator):
    """Every scalar series of an event accumulator, by tag."""
    values = {}
    for tag in accumulator.Tags()["tensors"]:
        if accumulator.SummaryMetadata(tag).plugin_data.plugin_name != "scalars":
            continue
        values[tag] = [float(tf.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)]
    return values
