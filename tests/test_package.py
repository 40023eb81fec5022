import subprocess
import sys
import textwrap

import keras_retinanet


def test_version():
    assert keras_retinanet.__version__.count(".") >= 2


def test_importing_the_package_is_enough_to_load_snapshots(tmp_path):
    """A fresh interpreter that only does `import keras_retinanet` opens .keras files with plain Keras."""
    path = tmp_path / "model.keras"
    build = textwrap.dedent(
        f"""
        from keras_retinanet import models
        model = models.backbone("mobilenet128_0.25").retinanet(2)
        models.convert_model(model).save({str(path)!r})
        """
    )
    load = textwrap.dedent(
        f"""
        import keras, numpy as np
        import keras_retinanet
        model = keras.models.load_model({str(path)!r})
        boxes, scores, labels = model.predict_on_batch(np.zeros((1, 128, 128, 3), np.float32))[:3]
        print(boxes.shape, [type(l).__name__ for l in model.layers][-1])
        """
    )
    for script in (build, load):
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["(1,", "300,", "4)", "FilterDetections"]


def test_importing_the_package_does_not_import_tensorflow():
    script = textwrap.dedent(
        """
        import sys
        import keras_retinanet
        from keras_retinanet import constants, errors, spec
        print("tensorflow" in sys.modules, "keras" in sys.modules)
        from keras_retinanet import models
        print("tensorflow" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "False", "True"]
