"""agetf: face age and gender prediction as a high-throughput TensorFlow trainer."""

import setuptools

setuptools.setup(
    name="agetf",
    version="0.1.0",
    description="Face age and gender prediction: TFRecord converter, tf.data pipeline, "
    "distributed Keras 3 trainer, SavedModel export.",
    packages=setuptools.find_packages(include=["agetf", "agetf.*"]),
    # The face template agetf.face_alignment aligns photos' faces to.
    package_data={"agetf": ["face_template.json"]},
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
        # Warping and resizing photos' faces (agetf.face_alignment); tested with 4.x.
        "opencv-python-headless>=4.8,<5",
        # Face detection with five landmarks (agetf.face_detection); its weights ship in
        # the wheel. 1.x's detect_faces(output_type="numpy") row layout is relied on.
        "mtcnn>=1.0,<2",
    ],
    extras_require={
        # LiteRT's interpreter runs the TFLite models (tf.lite.Interpreter is deprecated);
        # the tests run them on it too.
        "litert": ["ai-edge-litert"],
        "test": ["pytest>=8", "scikit-image", "ai-edge-litert"],
    },
)
