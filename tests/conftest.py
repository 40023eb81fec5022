"""Shared fixtures: tiny synthetic datasets written to temporary folders."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from keras_retinanet.utils import synthetic  # noqa: E402


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory):
    """A small shapes dataset shared by the whole session (treat it as read-only).

    Returns a dict with ``classes``, ``train`` and ``val`` CSV paths and ``dir``.
    """
    out_dir = tmp_path_factory.mktemp("shapes")
    paths = synthetic.make_dataset(
        str(out_dir), {"train": 16, "val": 4}, seed=7, image_size=128, min_size=24, max_size=64
    )
    paths["dir"] = str(out_dir)
    return paths
