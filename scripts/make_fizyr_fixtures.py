"""Make the fizyr 1.0 fixtures: real fizyr .h5 models and the outputs fizyr computes for fixed inputs.

Runs in a virtual environment with fizyr/keras-retinanet 1.0.0 on TensorFlow 2.15 (Keras 2):
``scripts/fizyr_fixtures.sh`` makes it and calls this. Not part of the package, and it
never imports this repository's code: what it writes is what fizyr itself writes.

For each model (a MobileNet with a small FPN and heads, a ResNet-50 as fizyr builds it):

    <name>_training.h5      fizyr's training model (compiled, as retinanet-train saves it)
    <name>_inference.h5     models.convert_model of it (anchors, NMS inside)
    <name>_outputs.npz      images (uint8 BGR), inputs (preprocessed, resized), scales,
                            training outputs (regression, classification) and inference
                            outputs (boxes, scores, labels) that fizyr computed

The convolution kernels get He-initialised random values and the batch normalisations the
statistics of the images (fizyr's initialisation makes every score 0.01, so nothing would
be detected): detections then differ anchor to anchor.
"""
import argparse
import functools
import json
import os
import sys

import numpy as np

IMAGE_SHAPES = [(100, 150), (120, 96)]
MIN_SIDE, MAX_SIDE = 96, 128
NUM_CLASSES = 3
SCORE_THRESHOLD = 0.5
# the classification output's bias: a few hundred (anchor, class) pairs score above the
# threshold (the filtering of both packages agrees exactly below a thousand candidates)
CLASSIFICATION_BIAS = -3.0
MODELS = {
    # name: (fizyr backbone, FPN / head channels (None: fizyr's 256))
    "mobilenet128_0.25": ("mobilenet128_0.25", 32),
    "resnet50": ("resnet50", None),
}


def he_initialise(model, seed):
    import keras

    rng = np.random.default_rng(seed)
    for layer in _convolutions(model):
        weights = layer.get_weights()
        kernel = weights[0]
        fan_in = np.prod(kernel.shape[:2]) if isinstance(layer, keras.layers.DepthwiseConv2D) else np.prod(kernel.shape[:-1])
        weights[0] = rng.normal(0.0, np.sqrt(2.0 / fan_in), kernel.shape).astype(np.float32)
        if layer.name == "pyramid_classification":
            weights[1] = np.full_like(weights[1], CLASSIFICATION_BIAS)
        layer.set_weights(weights)


def calibrate_batch_norm(model, images):
    """Set every BatchNormalization's moving statistics to those of its input on ``images``.

    With random kernels, activations grow layer after layer (a ResNet-50's reach 1e5);
    calibrated, every layer is normalised and the scores spread, as in a trained model.
    """
    import keras

    for layer in [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]:
        probe = keras.Model(model.inputs, layer.input)
        values = np.concatenate([probe.predict_on_batch(image[None]).reshape(-1, layer.input.shape[-1]) for image in images])
        gamma, beta, _, _ = layer.get_weights()
        layer.set_weights([gamma, beta, values.mean(axis=0), values.var(axis=0) + 1e-3])


def _convolutions(model):
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _convolutions(layer)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            yield layer


def build(backbone_name, feature_size):
    from keras_retinanet import losses, models
    from keras_retinanet.models import retinanet as fizyr_retinanet

    kwargs = {}
    if feature_size is not None:
        anchors = 9
        pyramid = getattr(fizyr_retinanet, "__create_pyramid_features")
        kwargs["create_pyramid_features"] = functools.partial(pyramid, feature_size=feature_size)
        kwargs["submodels"] = [
            ("regression", fizyr_retinanet.default_regression_model(
                4, anchors, pyramid_feature_size=feature_size, regression_feature_size=feature_size)),
            ("classification", fizyr_retinanet.default_classification_model(
                NUM_CLASSES, anchors, pyramid_feature_size=feature_size, classification_feature_size=feature_size)),
        ]  # fmt: skip
    backbone = models.backbone(backbone_name)
    model = backbone.retinanet(num_classes=NUM_CLASSES, **kwargs)
    import keras

    model.compile(
        loss={"regression": losses.smooth_l1(), "classification": losses.focal()},
        optimizer=keras.optimizers.Adam(learning_rate=1e-5, clipnorm=0.001),
    )
    return backbone, model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="folder for the fixtures")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args(argv)
    os.makedirs(args.output, exist_ok=True)

    import keras
    import tensorflow as tf
    from importlib.metadata import version

    from keras_retinanet import models
    from keras_retinanet.utils.image import preprocess_image, resize_image

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=shape + (3,), dtype=np.uint8) for shape in IMAGE_SHAPES]
    manifest = {"fizyr_keras_retinanet": version("keras-retinanet"), "tensorflow": tf.__version__, "keras": keras.__version__,
                "min_side": MIN_SIDE, "max_side": MAX_SIDE, "score_threshold": SCORE_THRESHOLD, "models": {}}  # fmt: skip
    for seed, name in enumerate(args.models):
        backbone_name, feature_size = MODELS[name]
        keras.utils.set_random_seed(seed)
        backbone, model = build(backbone_name, feature_size)
        he_initialise(model, seed)
        mode = "tf" if backbone_name.startswith("mobilenet") else "caffe"
        inputs = [resize_image(preprocess_image(image.copy(), mode=mode), min_side=MIN_SIDE, max_side=MAX_SIDE)[0]
                  for image in images]  # fmt: skip
        calibrate_batch_norm(model, inputs)
        inference = models.convert_model(model, score_threshold=SCORE_THRESHOLD)
        training_path = os.path.join(args.output, f"{name}_training.h5")
        inference_path = os.path.join(args.output, f"{name}_inference.h5")
        model.save(training_path)
        inference.save(inference_path)

        record = {"inputs": [], "scales": [], "regression": [], "classification": [], "boxes": [], "scores": [],
                  "labels": []}  # fmt: skip
        for image in images:
            x = preprocess_image(image.copy(), mode=mode)
            x, scale = resize_image(x, min_side=MIN_SIDE, max_side=MAX_SIDE)
            regression, classification = model.predict_on_batch(x[None])
            boxes, scores, labels = inference.predict_on_batch(x[None])[:3]
            for key, value in (("inputs", x), ("scales", scale), ("regression", regression[0]),
                               ("classification", classification[0]), ("boxes", boxes[0]), ("scores", scores[0]),
                               ("labels", labels[0])):  # fmt: skip
                record[key].append(np.asarray(value))
        arrays = {f"image_{i}": image for i, image in enumerate(images)}
        for key, values in record.items():
            arrays.update({f"{key}_{i}": value for i, value in enumerate(values)})
        np.savez_compressed(os.path.join(args.output, f"{name}_outputs.npz"), **arrays)
        detections = [int((s > SCORE_THRESHOLD).sum()) for s in record["scores"]]
        candidates = [int((c > SCORE_THRESHOLD).sum()) for c in record["classification"]]
        manifest["models"][name] = {"backbone": backbone_name, "feature_size": feature_size or 256,
                                    "detections": detections, "candidates": candidates}  # fmt: skip
        print(f"{name}: {training_path}, {inference_path}; detections per image {detections} of {candidates} "
              f"(anchor, class) pairs above {SCORE_THRESHOLD}", flush=True)
    with open(os.path.join(args.output, "manifest.json"), "w") as file:
        json.dump(manifest, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
