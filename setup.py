"""agetf: face age and gender prediction as a high-throughput TensorFlow trainer."""

import os
import re

import setuptools

# The version is agetf.__version__, read without importing the package (and TensorFlow).
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "agetf", "__init__.py")) as f:
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

setuptools.setup(
    name="agetf",
    version=VERSION,
    license="Apache-2.0",
    description="Face age and gender prediction: TFRecord converter, tf.data pipeline, "
    "distributed Keras 3 trainer, SavedModel export.",
    packages=setuptools.find_packages(include=["agetf", "agetf.*"]),
    # The face template agetf.serving.face_alignment aligns photos' faces to.
    package_data={"agetf.serving": ["face_template.json"]},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.10,<4",
        "tensorflow-datasets>=4.9",
        "numpy",
        "absl-py",
        "tensorboard>=2.21,<2.22",
        "matplotlib",
        "pillow>=10.1",  # ImageFont.load_default(size=...) for the annotated photos
        # TFRecord's CRC-32C in the converter's workers, which run without TensorFlow
        # (agetf.data.shard_writer.frame_record); Google's, with a C implementation.
        "google-crc32c>=1.5",
        # Warping and resizing photos' faces (agetf.serving.face_alignment); tested with 4.x.
        "opencv-python-headless>=4.8,<5",
        # Face detection with five landmarks (agetf.serving.face_detection); its weights ship in
        # the wheel. 1.x's detect_faces(output_type="numpy") row layout is relied on.
        "mtcnn>=1.0,<2",
        # Progress bars on a terminal (agetf.common.progress); tensorflow-datasets needs it too.
        "tqdm",
        # IMDB-WIKI's imdb.mat/wiki.mat (agetf.data.label_adapters.imdb_wiki, scipy.io.loadmat).
        "scipy",
    ],
    entry_points={"console_scripts": [
        "agetf-train=agetf.train:console_main",
        "agetf-convert=agetf.convert:console_main",
        "agetf-predict=agetf.predict:console_main",
        "agetf-data-service=agetf.data_service:console_main",
    ]},
    extras_require={
        # LiteRT's interpreter runs the TFLite models (tf.lite.Interpreter is deprecated);
        # the tests run them on it too.
        "litert": ["ai-edge-litert"],
        # pytest-xdist: the README's test command runs the suite in two processes; ruff: CI's
        # linter (pyproject.toml).
        "test": ["pytest>=8", "pytest-xdist>=3", "scikit-image", "ai-edge-litert", "ruff"],
    },
)
