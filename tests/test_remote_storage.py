"""--data_dir on any filesystem TensorFlow reads, --model_dir on a local or mounted folder.

TensorFlow's in-memory ram:// filesystem stands in for gs:// and the like: a path there
exists for tf.io.gfile and tf.data only, not for Python's os and open.
"""

import os
import uuid

import pytest
import tensorflow as tf

from agetf import UsageError, config
from agetf.data import input_pipeline, record_audit
from agetf.data.input_config import InputConfig

from tiny_runs import tiny_config  # pytest puts tests/ on sys.path

IMG_DIM = 32


@pytest.fixture(scope="module")
def ram_data_dir(data_dir):
    """The session's converted dataset, copied file by file into ram://."""
    remote = f"ram://agetf-{uuid.uuid4().hex}/faces"
    tf.io.gfile.makedirs(remote)
    for name in os.listdir(data_dir):
        tf.io.gfile.copy(os.path.join(data_dir, name), f"{remote}/{name}")
    yield remote
    tf.io.gfile.rmtree(remote.rsplit("/", 1)[0])


def test_shards_and_report_are_found_on_another_filesystem(data_dir, ram_data_dir):
    for split in ("train", "validation", "test"):
        shards = input_pipeline.list_shards(ram_data_dir, split)
        assert [os.path.basename(path) for path in shards] == [
            os.path.basename(path) for path in input_pipeline.list_shards(data_dir, split)]
        assert all(path.startswith(ram_data_dir + "/") for path in shards)
    report = input_pipeline.read_report(ram_data_dir)
    assert report and report == input_pipeline.read_report(data_dir)
    assert input_pipeline.num_examples(ram_data_dir, "test") == report["counts"]["test"]
    local, remote = (InputConfig(data_dir=d, img_dim=IMG_DIM)
                     for d in (data_dir, ram_data_dir))
    assert input_pipeline.training_canvas(remote) == input_pipeline.training_canvas(local)


def test_batches_are_read_from_another_filesystem(ram_data_dir):
    settings = InputConfig(data_dir=ram_data_dir, img_dim=IMG_DIM,
                                          shuffle_buffer=16, seed=1)
    images, labels = next(iter(input_pipeline.build_dataset(settings, "train", 4, training=True)))
    assert images.shape[0] == 4 and images.dtype == tf.uint8 and labels["age"].shape == (4,)
    evaluation = input_pipeline.build_dataset(settings, "test", 8, training=False)
    assert sum(int(batch.shape[0]) for batch, _ in evaluation) == \
        input_pipeline.read_report(ram_data_dir)["counts"]["test"]
    audit = record_audit.audit_split(ram_data_dir, "test")
    assert not audit.lost and audit.readable == audit.expected > 0


def test_a_missing_remote_data_dir_is_one_line_naming_the_fix():
    with pytest.raises(UsageError, match=r"^data directory ram://nowhere/faces does not exist "
                                         r"\(or TensorFlow has no filesystem .*make_tfrecords$"):
        input_pipeline.list_shards("ram://nowhere/faces", "train")


@pytest.mark.parametrize("model_dir", ["gs://bucket/runs/a", "s3://bucket/run", "ram://run"])
def test_a_url_model_dir_is_one_line_naming_the_fix(data_dir, model_dir):
    with pytest.raises(UsageError, match=rf"^--model_dir={model_dir} must be a local or mounted "
                                         "folder, not a URL; mount .*give its path$"):
        tiny_config(data_dir, model_dir)
    assert isinstance(tiny_config(data_dir, "runs/a"), config.TrainConfig)
