"""tf.data service on loopback: a dispatcher and a worker in the test process feed the pipeline."""

import collections
import subprocess
import sys

import pytest
import tensorflow as tf

from agetf.config import TrainConfig
from agetf.data import input_pipeline, service_servers
from agetf.data.input_config import InputConfig
from agetf.training import distributed_trainer as trainer_lib

from tiny_runs import tiny_config

pytestmark = pytest.mark.slow  # end-to-end: real processes and runs (pytest.ini)


@pytest.fixture(scope="module")
def service():
    dispatcher = service_servers.start_dispatcher(port=0)
    worker = service_servers.start_worker(dispatcher.target, port=0)
    yield dispatcher, worker
    worker.stop()
    dispatcher.stop()


def _filenames(dataset):
    return collections.Counter(name for _, labels in dataset for name in labels["filename"].numpy())


def test_one_epoch_through_the_service_has_every_example_once(data_dir, service):
    dispatcher, _ = service
    config = InputConfig(data_dir=data_dir, img_dim=32)
    local = input_pipeline.build_dataset(config, "validation", 4, training=False,
                                         include_metadata=True)
    served = input_pipeline.distribute_through_service(local, dispatcher.target, "eval-once",
                                                       processing_mode="distributed_epoch")
    expected = _filenames(local)
    assert sum(expected.values()) == input_pipeline.num_examples(data_dir, "validation")
    assert _filenames(served) == expected


def test_training_through_the_service(data_dir, tmp_path, service):
    dispatcher, worker = service
    config = tiny_config(data_dir, tmp_path / "run", heads=("age_histogram",), epochs=1,
                         steps_per_epoch=4, summary_images=0)
    config = TrainConfig(**{**config.__dict__, "input": InputConfig(
        **{**config.input.__dict__, "data_service": dispatcher.target})})
    trainer = trainer_lib.Trainer(config)
    history = trainer.fit()
    assert int(trainer.global_step.numpy()) == 4
    assert history["epoch"] == [1] and history["loss"][0] > 0
    assert worker._num_tasks() >= 1  # the worker really produced the training batches


def test_a_service_address_without_grpc_is_refused(data_dir):
    dataset = tf.data.Dataset.range(3)
    with pytest.raises(ValueError, match="grpc://HOST:PORT"):
        input_pipeline.distribute_through_service(dataset, "localhost:5050", "job")


def test_a_bad_port_fails_in_one_line_before_tensorflow_starts():
    code = ("import sys\nfrom agetf import data_service\nsys.argv = ['x', '--port=70000']\n"
            "try:\n    data_service.console_main()\nfinally:\n"
            "    assert 'tensorflow' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "agetf.data_service: error: --port=70000 must be in [0, 65535] (0: any free port)"]
