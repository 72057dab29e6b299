"""Shared, session-scoped fixtures: one set of synthetic faces, converted once.

TensorFlow's import and graph tracing dominate test time on a 2-core CI machine, so
every test that needs data reuses these fixtures instead of making its own.
"""

import collections
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

# Two logical CPU devices, so MirroredStrategy can be tested without GPUs. This must
# run before anything initializes TensorFlow's devices.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

NUM_FACES = 200
FACES_SEED = 7
EXPORT_IMG_DIM = 32


@pytest.fixture(scope="session")
def faces_dir(tmp_path_factory):
    """A folder of NUM_FACES synthetic UTKFace-named 200x200 JPEG faces."""
    from agetf.data import synthetic

    out = tmp_path_factory.mktemp("faces")
    synthetic.write_synthetic_faces(str(out), count=NUM_FACES, seed=FACES_SEED)
    return str(out)


@pytest.fixture(scope="session")
def data_dir(faces_dir, tmp_path_factory):
    """The synthetic faces converted to TFRecords (80/10/10, at least 2 shards a split)."""
    from agetf.data import conversion, convert_config

    out = tmp_path_factory.mktemp("tfrecords") / "faces"
    conversion.convert(convert_config.ConvertConfig(
        input_dirs=[faces_dir], output_dir=str(out), min_shards=2, workers=2,
        show_progress=False))
    return str(out)


@pytest.fixture
def parse_train_flags():
    """Parses argv into absl's FLAGS for one test, and puts them back afterwards."""
    saved = flags.FLAGS.flag_values_dict()

    def parse(*argv):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["agetf.train", *argv])

    yield parse
    flags.FLAGS.unparse_flags()
    for name, value in saved.items():
        flags.FLAGS[name].value = value


TinyExport = collections.namedtuple("TinyExport", "model saved_model")


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """A tiny MobileNetV2 with every head, BatchNorm calibrated, and its SavedModel (32 px)."""
    import numpy as np

    from agetf.common.head_names import HEADS
    from agetf.modeling import model as model_lib
    from agetf.serving import export

    from tiny_runs import calibrate_batchnorm  # pytest puts tests/ on sys.path

    dim = EXPORT_IMG_DIM
    model = model_lib.build_model(backbone="MobileNetV2", img_dim=dim, heads=HEADS,
                                  alpha=0.35)
    calibrate_batchnorm(model, np.random.default_rng(1).uniform(0, 255, (8, dim, dim, 3))
                        .astype("float32"))
    saved_model = str(tmp_path_factory.mktemp("tiny_export") / "saved_model")
    export.export_saved_model(model, saved_model, img_dim=dim)
    return TinyExport(model, saved_model)


# Tests that need a trained or exported model, or every entry point's flags from a
# subprocess (test_docs' `results`), are slow, whichever of them runs first pays for the
# fixture; `pytest -m "not slow"` leaves them all out (pytest.ini).
SLOW_FIXTURES = {"tiny_export", "trained_run", "finished_run", "exported", "results"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
