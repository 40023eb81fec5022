import cv2
import numpy as np
import pytest

from keras_retinanet.utils.image import (
    CAFFE_BGR_MEAN,
    VisualEffect,
    compute_resize_scale,
    preprocess_image,
    random_visual_effect_generator,
    read_image_bgr,
    read_image_size,
    resize_image,
)


def test_read_image_bgr_and_size(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, size=(12, 20, 3), dtype=np.uint8)
    path = str(tmp_path / "a.png")
    cv2.imwrite(path, image)
    read = read_image_bgr(path)
    assert read.dtype == np.uint8
    np.testing.assert_array_equal(read, image)
    assert read_image_size(path) == (12, 20)

    grey = str(tmp_path / "grey.png")
    cv2.imwrite(grey, image[..., 0])
    assert read_image_bgr(grey).shape == (12, 20, 3)


def test_read_errors_name_the_path(tmp_path):
    missing = str(tmp_path / "missing.jpg")
    with pytest.raises(FileNotFoundError, match=f"image file not found: {missing}"):
        read_image_bgr(missing)
    with pytest.raises(FileNotFoundError, match=f"image file not found: {missing}"):
        read_image_size(missing)
    broken = tmp_path / "broken.png"
    broken.write_text("this is not an image")
    with pytest.raises(OSError, match=f"could not read image {broken}"):
        read_image_bgr(str(broken))
    with pytest.raises(OSError, match=f"could not read image {broken}"):
        read_image_size(str(broken))


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((480, 640, 3), 800 / 480),
        ((800, 1333, 3), 1.0),
        ((500, 2000, 3), 1333 / 2000),  # the long side limits
        ((1600, 1200), 800 / 1200),
    ],
)
def test_compute_resize_scale(shape, expected):
    assert compute_resize_scale(shape, 800, 1333) == pytest.approx(expected)


def test_resize_image():
    image = np.zeros((48, 64, 3), np.uint8)
    resized, scale = resize_image(image, min_side=96, max_side=200)
    assert scale == 2.0 and resized.shape == (96, 128, 3)
    resized, scale = resize_image(image, min_side=96, max_side=100)
    assert scale == pytest.approx(100 / 64) and resized.shape == (75, 100, 3)


def test_preprocess_modes():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    caffe = preprocess_image(image)
    assert caffe.dtype == np.float32 and caffe.shape == image.shape
    np.testing.assert_array_equal(caffe, image.astype(np.float32) - np.array(CAFFE_BGR_MEAN, np.float32))
    # a strided view and a batch give the same values
    np.testing.assert_array_equal(preprocess_image(image[:, ::-1])[:, ::-1], caffe)
    np.testing.assert_array_equal(preprocess_image(image[None])[0], caffe)
    tf_mode = preprocess_image(image, mode="tf")
    np.testing.assert_allclose(tf_mode, image / 127.5 - 1, atol=1e-6)
    assert tf_mode.min() >= -1 and tf_mode.max() <= 1
    np.testing.assert_array_equal(preprocess_image(image, mode="none"), image.astype(np.float32))
    # keras' 'torch' mode, on the channels as they come (BGR), as fizyr fed its SE backbones
    torch_mode = preprocess_image(image, mode="torch")
    expected = (image / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(torch_mode, expected, atol=1e-5)
    assert torch_mode.dtype == np.float32
    with pytest.raises(ValueError, match="unknown preprocessing mode 'pytorch'"):
        preprocess_image(image, mode="pytorch")


def test_visual_effect_components():
    image = np.full((4, 4, 3), 100, np.uint8)
    image[0, 0] = 200
    np.testing.assert_array_equal(VisualEffect(1.0, 0.0, 0.0, 1.0)(image), image)
    brighter = VisualEffect(None, 0.5, None, None)(image)
    assert brighter[1, 1, 0] == 227 and brighter[0, 0, 0] == 255  # 100 + 127.5, clipped at 255
    contrast = VisualEffect(2.0, None, None, None)(image).astype(int)
    mean = image[..., 0].mean()
    assert contrast[1, 1, 0] == int(np.clip((100 - mean) * 2 + mean, 0, 255))
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 2] = 255
    # half a turn of hue: red -> cyan
    np.testing.assert_array_equal(VisualEffect(None, None, 0.5, None)(red)[0, 0], [255, 255, 0])
    # no saturation: grey
    grey = VisualEffect(None, None, None, 1e-9)(red)[0, 0]
    assert grey[0] == grey[1] == grey[2]


def test_random_visual_effect_generator():
    a = random_visual_effect_generator(prng=np.random.RandomState(3))
    b = random_visual_effect_generator(prng=np.random.RandomState(3))
    for _ in range(10):
        effect, same = next(a), next(b)
        assert 0.9 <= effect.contrast_factor <= 1.1
        assert -0.1 <= effect.brightness_delta <= 0.1
        assert -0.05 <= effect.hue_delta <= 0.05
        assert 0.95 <= effect.saturation_factor <= 1.05
        assert repr(effect) == repr(same)
    image = np.random.default_rng(0).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    out = next(a)(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    with pytest.raises(ValueError, match=r"brightness_range must be an interval within \[-1, 1\]"):
        random_visual_effect_generator(brightness_range=(0.5, 2))
