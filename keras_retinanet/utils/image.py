"""Image reading, preprocessing and resizing. Images are BGR; float32 after preprocessing."""
import numpy as np

# ImageNet channel means in BGR order, as subtracted by caffe-style backbones (ResNet, VGG).
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
PREPROCESS_MODES = ("caffe", "tf", "none")


def preprocess_image(x, mode="caffe"):
    """Bring a BGR image (or batch) into the range a backbone expects.

    Args:
        x: (..., H, W, 3) BGR, uint8 or float.
        mode: 'caffe' subtracts the ImageNet BGR means (ResNet, VGG); 'tf' scales to
            [-1, 1] (MobileNet, DenseNet); 'none' only casts (EfficientNet, whose
            keras.applications model rescales internally).

    Returns:
        float32 array of the same shape.
    """
    x = np.asarray(x).astype(np.float32, copy=True)
    if mode == "caffe":
        x -= np.asarray(CAFFE_BGR_MEAN, dtype=np.float32)
    elif mode == "tf":
        x /= 127.5
        x -= 1.0
    elif mode != "none":
        raise ValueError(f"unknown preprocessing mode {mode!r}; expected one of {PREPROCESS_MODES}")
    return x
