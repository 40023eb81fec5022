"""Installation script for keras-retinanet (Keras 3 / TensorFlow, pure Python)."""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _version():
    with open(os.path.join(HERE, "keras_retinanet", "__init__.py")) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def _long_description():
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
        return f.read()


TOOLS = {
    "retinanet-train": "train",
    "retinanet-evaluate": "evaluate",
    "retinanet-convert-model": "convert_model",
    "retinanet-debug": "debug",
    "retinanet-predict": "predict",
}

setup(
    name="keras-retinanet",
    version=_version(),
    description="RetinaNet object detection (focal loss + FPN) for Keras 3 and TensorFlow",
    long_description=_long_description(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_retinanet", "keras_retinanet.*"]),
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.0",
        "numpy>=1.23",
        "opencv-python-headless>=4.5",
        "pycocotools>=2.0.6",
        "tqdm>=4.0",
        "tensorboard>=2.16",
        "matplotlib>=3.5",
        "pillow>=9",
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6", "pillow>=9"],
        "gpu": ["tensorflow[and-cuda]>=2.16"],
        "onnx": ["tf2onnx>=1.17", "onnxruntime>=1.17"],
    },
    entry_points={
        "console_scripts": [
            f"{tool}=keras_retinanet.bin.{module}:main" for tool, module in TOOLS.items()
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
