"""Model utilities: freezing layers, synchronised batch normalisation, folding it for inference."""
import keras
import numpy as np

_FOLDABLE_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def freeze(model):
    """Make every layer of ``model`` non-trainable (BatchNormalization then runs in inference mode).

    Args:
        model: keras.Model, e.g. a backbone passed as ``modifier=freeze``.

    Returns:
        The same model, for use as a backbone ``modifier``.
    """
    for layer in model.layers:
        layer.trainable = False
    return model


def _layers(model):
    """Every layer of ``model``, those of nested models included."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)


def synchronize_batch_norm(model, synchronized=True):
    """Make the trainable BatchNormalization layers of ``model`` use the global batch's statistics.

    Under a ``tf.distribute`` strategy a BatchNormalization layer normalises by the mean
    and variance of its replica's share of the batch, unless it is synchronised: then
    they are all-reduced over the replicas, and training equals training on one device
    with the whole batch. Without a strategy the two are the same. Frozen layers (run in
    inference mode) compute no statistics and are left as they are. Keras saves the
    setting with the model; a run sets it again for itself.

    Args:
        model: keras.Model.
        synchronized: True to synchronise, False for per-replica statistics.

    Returns:
        The number of layers set.
    """
    count = 0
    for layer in _layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            layer.synchronized = bool(synchronized)
            count += 1
    return count


def _producers(inbound_nodes):
    """Names of the layers whose outputs a serialised node consumes."""
    names = []

    def visit(value):
        if isinstance(value, dict):
            if value.get("class_name") == "__keras_tensor__":
                names.append(value["config"]["keras_history"][0])
            else:
                for item in value.values():
                    visit(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)

    visit(inbound_nodes)
    return names


def _foldable_pairs(model):
    """{batch-norm name: convolution name} for every BN that directly and solely follows a convolution."""
    config = model.get_config()
    consumers = {}
    inputs_of = {}
    for layer_config in config["layers"]:
        nodes = layer_config["inbound_nodes"]
        producers = _producers(nodes)
        inputs_of[layer_config["name"]] = (len(nodes), producers)
        for producer in producers:
            consumers[producer] = consumers.get(producer, 0) + 1
    for output in _producers(config["output_layers"]):
        consumers[output] = consumers.get(output, 0) + 1

    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or layer.axis not in (-1, 3):
            continue
        num_nodes, producers = inputs_of[layer.name]
        if num_nodes != 1 or len(producers) != 1:
            continue
        conv = model.get_layer(producers[0])
        if (
            isinstance(conv, _FOLDABLE_CONVOLUTIONS)
            and not isinstance(conv, keras.layers.SeparableConv2D)
            and conv.data_format == "channels_last"
            and conv.activation is keras.activations.linear
            and consumers.get(conv.name, 0) == 1
            and inputs_of[conv.name][0] == 1
        ):
            pairs[layer.name] = conv.name
    return pairs


def _folded_weights(conv, bn):
    """Kernel and bias of ``conv`` followed by ``bn`` in inference mode."""
    kernel = conv.kernel.numpy()
    channels = bn.moving_mean.shape[0]
    bias = conv.bias.numpy() if conv.use_bias else np.zeros(channels, kernel.dtype)
    gamma = bn.gamma.numpy() if bn.scale else np.ones(channels, kernel.dtype)
    beta = bn.beta.numpy() if bn.center else np.zeros(channels, kernel.dtype)
    inv = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    # Output channel c of a depthwise kernel (kh, kw, C, M) is (c // M, c % M).
    kernel = kernel * inv.reshape(kernel.shape[2:] if isinstance(conv, keras.layers.DepthwiseConv2D) else (-1,))
    bias = (bias - bn.moving_mean.numpy()) * inv + beta
    return kernel, bias.astype(kernel.dtype)


def fold_batch_normalization(model):
    """Inference copy of ``model`` with batch normalisation folded into the convolutions before it.

    Each BatchNormalization whose only input is a linear Conv2D / DepthwiseConv2D (used
    nowhere else) is removed and its moving statistics and affine parameters are folded
    into the convolution's kernel and bias: ``conv(x) * s + t`` with
    ``s = gamma / sqrt(var + eps)``, ``t = beta - mean * s``. The result equals the
    model's inference-mode output up to float rounding, with fewer passes over the
    activations (and the convolution, bias and ReLU fuse into one kernel).

    The new model is an independent copy (new layers, weights copied), so later training of
    ``model`` does not reach it: fold a finished model (e.g. for prediction or export).

    Args:
        model: functional keras.Model (e.g. a RetinaNet inference model).

    Returns:
        keras.Model with the same inputs and outputs.
    """
    pairs = _foldable_pairs(model)
    if not pairs:
        return model
    folded_convs = {conv: bn for bn, conv in pairs.items()}

    def clone(layer):
        if layer.name in pairs:
            return keras.layers.Identity(name=layer.name)
        config = layer.get_config()
        if layer.name in folded_convs:
            config["use_bias"] = True
            config["bias_initializer"] = "zeros"
        return layer.__class__.from_config(config)

    def call(layer, *args, **kwargs):
        if layer.name in pairs:
            kwargs.pop("mask", None)
            kwargs.pop("training", None)
        return layer(*args, **kwargs)

    folded = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for layer in folded.layers:
        if layer.name in folded_convs:
            original = model.get_layer(layer.name)
            layer.set_weights(list(_folded_weights(original, model.get_layer(folded_convs[layer.name]))))
        elif layer.name not in pairs and layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return folded
