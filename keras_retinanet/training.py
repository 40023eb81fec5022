"""What ``retinanet-train`` does, as functions: strategy, generators, models, callbacks, the run.

``bin/train.py`` parses the command line; ``prepare(args)`` checks everything and builds
what training needs (so bad input fails before the first step), and returns the
function that trains. ``create_generators``, ``create_models`` and ``create_callbacks``
keep fizyr's names for scripts that assemble their own training.
"""
import os
import secrets
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_retinanet import constants, losses, models
from keras_retinanet.distribute import (
    ONLY_WORKER,
    WorkerGroup,
    distribute_input,
    in_multi_worker_mode,
    multi_worker_strategy,
    read_tf_config,
)
from keras_retinanet.errors import ModelLoadError, OutputError, SpecConflictError, SpecError, first_line
from keras_retinanet.callbacks.training import (
    ChiefLogs,
    EpochLog,
    EpochSummary,
    best_in_log,
    best_snapshot_path,
    log_path,
    LinearWarmup,
    NanGuard,
    Snapshot,
    TimeLimit,
    CosineSchedule,
    epoch_from_snapshot,
)
from keras_retinanet.models.retinanet import architecture_spec, retinanet_bbox
from keras_retinanet.preprocessing.datasets import DATASET_TYPES, generator_from_args
from keras_retinanet.preprocessing.pipeline import build_dataset, steps_per_epoch
from keras_retinanet.spec import (
    AnchorSpec,
    check_class_names,
    class_names_of,
    read_spec,
    resolve_recipe,
)
from keras_retinanet.utils.anchors import AnchorParameters, check_anchor_levels
from keras_retinanet.utils.config import anchor_settings, read_config_file
from keras_retinanet.utils.image import random_visual_effect_generator
from keras_retinanet.utils.model import synchronize_batch_norm
from keras_retinanet.utils.threads import use_parallel_ops_for
from keras_retinanet.utils.transform import random_transform_generator


# Keras' default BatchNormalization momentum (0.99) leaves the moving statistics of a backbone
# trained from scratch far behind its weights for hundreds of steps, so evaluation (inference
# mode) sees garbage; 0.9 tracks them within a few dozen steps.
TRAINABLE_BN_MOMENTUM = 0.9


class SetupError(ValueError):
    """Bad input found before training starts."""


def create_strategy(name="auto", multi_gpu=0):
    """The tf.distribute strategy for a run.

    Args:
        name: 'auto' (mirrored over ``multi_gpu`` GPUs when > 1, else the default),
            'default' (one device), 'mirrored' (all visible GPUs; without GPUs, all
            logical CPU devices, which is how the distributed path is tested on a CPU),
            'multi-worker' (MultiWorkerMirroredStrategy configured by TF_CONFIG: see
            ``keras_retinanet.distribute``). Create it before TensorFlow runs any op: the
            multi-worker strategy cannot be created after.
        multi_gpu: number of GPUs for 'auto'.

    Raises:
        SetupError: --multi-gpu asks for more GPUs than are visible.
        ClusterConfigError: 'multi-worker' without a valid TF_CONFIG.
    """
    if name == "multi-worker":
        return multi_worker_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "auto" and multi_gpu > 1:
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) < multi_gpu:
            raise SetupError(f"--multi-gpu {multi_gpu} asked for, but {len(gpus)} GPU(s) are visible")
        return tf.distribute.MirroredStrategy([gpu.name for gpu in gpus[:multi_gpu]])
    return tf.distribute.get_strategy()


def _anchor_config(config):
    """(anchor parameters (default: the package's), pyramid levels or None) of a parsed config."""
    anchor_params, pyramid_levels = anchor_settings(config)
    return anchor_params or AnchorParameters.default, pyramid_levels


# How retinanet-train names its recipe flags in notes and errors.
TRAIN_FLAGS = {
    "backbone": "--backbone",
    "anchors": "--config",
    "pyramid_levels": "--config",
    "class_names": "the training set's class list",
    "image_min_side": "--image-min-side",
    "image_max_side": "--image-max-side",
    "no_resize": "--no-resize",
}


def initial_weights_notes(args):
    """Notes on a new model's initial weights that do not suit its architecture."""
    if args.snapshot or args.weights or not args.imagenet_weights or getattr(args, "backbone_norm", None) != "group":
        return []
    return [
        "--backbone-norm group with ImageNet weights: the pretrained convolutions are kept but their "
        "BatchNorm statistics are not, so the backbone starts from features it was not trained for; "
        "GroupNorm is meant for training from scratch (--no-weights, as --preset scratch does)"
    ]


def training_recipe(args):
    """The recipe of a run: the flags, checked against the spec of ``--snapshot`` when resuming.

    Resuming, the snapshot's backbone, anchors and pyramid levels are used and a flag that
    contradicts them is an error; image sizes given differently are used, with a note.
    A new model takes the flags, with the package defaults for what they leave out.

    Returns:
        ``spec.Recipe`` (spec with backbone, preprocess_mode, anchors, pyramid_levels and
        image sizes; notes to print).
    """
    anchor_params, pyramid_levels = anchor_settings(getattr(args, "config_parsed", None))
    backbone = args.backbone
    weights = getattr(args, "weights", None)
    if backbone is None and weights and os.path.splitext(weights)[1].lower() == ".h5":
        from keras_retinanet.models.fizyr import read_fizyr_spec

        fizyr = read_fizyr_spec(weights)  # fine-tuning fizyr weights: their backbone
        backbone = None if fizyr is None else fizyr.backbone
    given = {
        "backbone": backbone,
        "anchors": None if anchor_params is None else AnchorSpec.from_parameters(anchor_params),
        "pyramid_levels": pyramid_levels,
        "image_min_side": args.image_min_side,
        "image_max_side": args.image_max_side,
        "no_resize": args.no_resize,
    }
    saved = None
    if args.snapshot:
        try:
            saved = read_spec(args.snapshot)
        except (ModelLoadError, SpecError) as error:
            raise SetupError(f"cannot read snapshot {args.snapshot}: {error}") from None
    needed = ("backbone", "anchors", "pyramid_levels", "image_min_side", "image_max_side", "no_resize")
    try:
        recipe = resolve_recipe(saved, given, needed=needed, source=args.snapshot or "the new model", flag_names=TRAIN_FLAGS)
    except SpecConflictError as error:
        raise SetupError(str(error)) from None
    if not args.snapshot:  # a new model: the defaults are the recipe, not a guess about a file
        recipe = type(recipe)(recipe.spec)
    backbone = models.backbone(recipe.spec.backbone)
    spec = recipe.spec
    try:
        check_anchor_levels(spec.anchor_params, spec.pyramid_levels)
    except ValueError as error:
        raise SetupError(f"{args.config or 'the anchor parameters'}: {error}") from None
    if spec.preprocess_mode is None:
        spec = spec.replace(preprocess_mode=backbone.preprocess_mode)
    return type(recipe)(spec, recipe.notes)


def random_augmentation(prng=None):
    """(transform generator, visual effect generator) of ``--random-transform``.

    Args:
        prng: ``numpy.random.RandomState`` for repeatable draws (None: unseeded).

    Small rotations, translations, shears and scalings, flips along both axes, and
    colour changes; ``retinanet-debug --random-transform`` shows the same.
    """
    transform_generator = random_transform_generator(
        prng=prng,
        min_rotation=-0.1,
        max_rotation=0.1,
        min_translation=(-0.1, -0.1),
        max_translation=(0.1, 0.1),
        min_shear=-0.1,
        max_shear=0.1,
        min_scaling=(0.9, 0.9),
        max_scaling=(1.1, 1.1),
        flip_x_chance=0.5,
        flip_y_chance=0.5,
    )
    visual_effect_generator = random_visual_effect_generator(
        contrast_range=(0.9, 1.1),
        brightness_range=(-0.1, 0.1),
        hue_range=(-0.05, 0.05),
        saturation_range=(0.95, 1.05),
        prng=prng,
    )
    return transform_generator, visual_effect_generator


def _data_seed(args):
    """Seed of the order of the training images (grouping, shuffling) and of their augmentation:
    ``--seed``, or the one the workers of a multi-worker run agreed on, or None (another every run)."""
    seed = getattr(args, "data_seed", None)
    return getattr(args, "seed", None) if seed is None else seed


def create_generators(args, preprocess_image, spec=None):
    """Training and validation generators for ``args.dataset_type`` (validation may be None).

    The training generator augments when ``args.random_transform`` is set (affine
    transforms and colour changes), else only flips horizontally half of the time. With
    ``args.seed`` the image order and the augmentation are repeatable (a multi-worker run
    without it agrees on one seed: its workers must cut the same batches).

    Args:
        args: parsed retinanet-train arguments.
        preprocess_image: the backbone's ``preprocess_image``.
        spec: ``DetectorSpec`` with the anchors, pyramid levels and image sizes of the run
            (``training_recipe``); default: ``args``.
    """
    seed = _data_seed(args)
    common = {
        "batch_size": args.batch_size,
        "config": getattr(args, "config_parsed", None),
        "image_min_side": args.image_min_side if spec is None else spec.image_min_side,
        "image_max_side": args.image_max_side if spec is None else spec.image_max_side,
        "no_resize": bool(args.no_resize if spec is None else spec.no_resize),
        "preprocess_image": preprocess_image,
        "seed": seed,
    }
    if spec is not None:
        common.update(anchor_params=spec.anchor_params, pyramid_levels=spec.pyramid_levels)
    prng = None if seed is None else np.random.RandomState(seed)  # None: seeded by the OS
    if args.random_transform:
        transform_generator, visual_effect_generator = random_augmentation(prng)
    else:
        transform_generator = random_transform_generator(prng=prng, flip_x_chance=0.5)
        visual_effect_generator = None
    train_kwargs = dict(
        common,
        transform_generator=transform_generator,
        visual_effect_generator=visual_effect_generator,
        group_method=args.group_method,
    )
    val_kwargs = dict(common, shuffle_groups=False)

    if args.dataset_type not in DATASET_TYPES:
        raise SetupError(f"unknown dataset type {args.dataset_type!r}")
    train = generator_from_args(args, set_name=getattr(args, "train_set", None), **train_kwargs)
    if args.dataset_type == "csv":
        val_annotations = getattr(args, "val_annotations", None)
        val = generator_from_args(args, annotations=val_annotations, **val_kwargs) if val_annotations else None
    else:
        val = generator_from_args(args, set_name=getattr(args, "val_set", None), **val_kwargs)
    return train, val


def create_models(
    backbone_retinanet,
    num_classes,
    weights,
    multi_gpu=0,
    freeze_backbone=False,
    lr=1e-5,
    optimizer_clipnorm=0.001,
    config=None,
    backbone_weights=None,
    freeze_bn=True,
    feature_size=None,
    submodel_depth=None,
    spec=None,
    head_norm=None,
    optimizer="adam",
    box_loss="smooth_l1",
    weight_decay=None,
    backbone_norm=None,
):
    """Build and compile the training model and its inference twin (fizyr's signature).

    Args:
        backbone_retinanet: ``Backbone.retinanet``.
        num_classes: number of object classes.
        weights: file of weights for the whole model (loaded where shapes match), or None.
        multi_gpu: unused (kept for compatibility; build inside a strategy scope instead).
        freeze_backbone: keep the backbone's weights fixed.
        lr, optimizer_clipnorm: Adam's learning rate and gradient clipping norm.
        config: parsed config.ini (anchor parameters, pyramid levels) or None.
        backbone_weights: 'imagenet', a weights file of the bare keras.applications
            backbone, or None (random).
        freeze_bn: run the backbone's BatchNormalization in inference mode (right with
            pretrained weights and small batches); otherwise BN trains, with momentum
            ``TRAINABLE_BN_MOMENTUM``.
        feature_size: channels of the FPN and of the heads' hidden layers (None: 256).
        submodel_depth: hidden conv layers of each head (None: 4).
        spec: ``DetectorSpec`` of the run (classes, image sizes, ...), saved in the models.
        head_norm: None / 'none' or 'group' (GroupNorm in the heads' hidden layers).
        optimizer, box_loss, weight_decay: see ``compile_training_model``.
        backbone_norm: None / 'batch' or 'group' (GroupNormalization in place of the
            backbone's BatchNormalization, ``models._applications.with_group_norm``).

    Returns:
        (model, training_model, prediction_model); model and training_model are the same.
    """
    if spec is not None and spec.anchors is not None:  # the run's recipe (training_recipe) has them already
        anchor_params, pyramid_levels = spec.anchor_params, spec.pyramid_levels
    else:
        anchor_params, pyramid_levels = _anchor_config(config)
    kwargs = {
        "anchor_params": anchor_params,
        "weights": backbone_weights,
        "freeze_bn": freeze_bn,
        "freeze_backbone": freeze_backbone,
    }
    if pyramid_levels is not None:
        kwargs["pyramid_levels"] = pyramid_levels
    if feature_size is not None:
        kwargs["feature_size"] = feature_size
    if submodel_depth is not None:
        kwargs["submodel_depth"] = submodel_depth
    if head_norm not in (None, "none"):
        kwargs["head_norm"] = head_norm
    if backbone_norm not in (None, "batch"):
        kwargs["backbone_norm"] = backbone_norm
    if spec is not None:
        kwargs["spec"] = spec
    from keras_retinanet.models.fizyr import fizyr_weights_model, is_fizyr_file

    fizyr_file = weights is not None and is_fizyr_file(weights)
    if fizyr_file and backbone_norm not in (None, "batch"):
        raise SetupError(f"{weights}: a fizyr model keeps its BatchNormalization layers; leave out --backbone-norm")
    if fizyr_file:
        # fizyr 1.0 weights: its architecture (keras-resnet's ResNet layout, FPN and head sizes)
        model, fresh = fizyr_weights_model(weights, num_classes, spec)
        if fresh:
            warnings.warn(
                f"{weights}: {', '.join(fresh)} start from a fresh initialisation (their shapes differ: other "
                "classes or anchors); every other layer has the file's weights",
                stacklevel=2,
            )
        weights = None
    else:
        model = backbone_retinanet(num_classes, **kwargs)
    if not freeze_bn:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
                layer.momentum = TRAINABLE_BN_MOMENTUM
    if weights is not None:
        try:
            model_with_weights(model, weights, skip_mismatch=True)
        except Exception as error:  # noqa: BLE001 - Keras raises many kinds for a file that is not weights
            raise SetupError(f"cannot load the weights of {weights}: {first_line(error, 200)}") from None
    compile_training_model(model, lr, optimizer_clipnorm, optimizer, box_loss, weight_decay)
    prediction_model = retinanet_bbox(model=model, anchor_params=anchor_params, pyramid_levels=pyramid_levels)
    return model, model, prediction_model


def model_with_weights(model, weights, skip_mismatch):
    """Load the weights of a file into ``model`` where they fit (fizyr's helper); returns the model.

    A legacy ``.h5`` file (Keras 2 / ``model.save('x.h5')``) is matched by layer name, as in
    fizyr; Keras 3 ``.weights.h5`` and ``.keras`` files by the model's structure.

    Args:
        model: the model to load into.
        weights: path of the file, or None (the model is returned as it is).
        skip_mismatch: skip layers whose weights have other shapes instead of failing.
    """
    if weights is None:
        return model
    path = os.fspath(weights)
    if path.lower().endswith(".h5") and not path.lower().endswith(".weights.h5"):
        model.load_weights(path, skip_mismatch=skip_mismatch, by_name=True)
    else:
        model.load_weights(path, skip_mismatch=skip_mismatch)
    return model


def make_optimizer(name="adam", lr=1e-5, clipnorm=0.001, weight_decay=None, momentum=0.9):
    """The optimiser of ``retinanet-train --optimizer``.

    Args:
        name: 'adam', 'adamw' (decoupled weight decay) or 'sgd' (with Nesterov-free momentum).
        lr: learning rate.
        clipnorm: clip each gradient to this norm (None or 0: no clipping).
        weight_decay: decay per step (adamw default 1e-4; sgd: None for none).
        momentum: SGD momentum.
    """
    clip = {"clipnorm": clipnorm} if clipnorm else {}
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr, **clip)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=1e-4 if weight_decay is None else weight_decay, **clip)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=momentum, weight_decay=weight_decay, **clip)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {constants.OPTIMIZERS}")


def compile_training_model(model, lr=1e-5, optimizer_clipnorm=0.001, optimizer="adam", box_loss="smooth_l1", weight_decay=None):
    """Compile for training: focal loss on ``classification``, ``box_loss`` on ``regression``.

    Args:
        lr, optimizer_clipnorm, optimizer, weight_decay: see ``make_optimizer`` (fizyr's
            default: Adam, clipped to the norm 0.001).
        box_loss: 'smooth_l1' (the paper's) or 'giou' (``losses.GIoULoss``).
    """
    model.compile(
        loss={"regression": losses.box_loss(box_loss), "classification": losses.focal()},
        optimizer=make_optimizer(optimizer, lr, optimizer_clipnorm, weight_decay),
    )


def create_callbacks(
    model, training_model, prediction_model, validation_generator, args, train_generator=None, workers=None
):
    """Snapshots, NaN guard, validation mAP, LR schedule, early stopping, TensorBoard, summaries.

    Args:
        workers: ``distribute.WorkerGroup`` of a multi-worker run, or None. Only the chief
            evaluates (its mAP is then shared with every worker, ``ChiefLogs``) and writes
            snapshots, the CSV log and TensorBoard; the time limit and a time-based
            schedule read a clock all workers share, so that they all stop, and change
            their learning rate, at the same step.

    Returns:
        (callbacks, snapshot callback or None, NaN guard, epoch summary).
    """
    callbacks = []
    chief = workers is None or workers.role.is_chief
    clock = {} if workers is None else {"clock": workers.clock}
    tensorboard = None
    if args.tensorboard_dir and chief:
        os.makedirs(args.tensorboard_dir, exist_ok=True)
        freq = int(args.tensorboard_freq) if str(args.tensorboard_freq).isdigit() else args.tensorboard_freq
        tensorboard = keras.callbacks.TensorBoard(log_dir=args.tensorboard_dir, update_freq=freq)

    if args.evaluation and validation_generator is not None:
        from keras_retinanet.callbacks.eval import Evaluate

        if chief:
            callbacks.append(
                Evaluate(
                    validation_generator,
                    tensorboard=tensorboard,
                    weighted_average=args.weighted_average,
                    prediction_model=prediction_model,
                    verbose=1 if _interactive() else 0,  # in a log file: the mAP is in the epoch's line
                )
            )
        if workers is not None:
            callbacks.append(ChiefLogs(workers, ["mAP"]))
    if tensorboard is not None:
        callbacks.append(tensorboard)  # after Evaluate, so that mAP is in the logs it writes

    snapshot = None
    if args.snapshots and chief:
        has_map = args.evaluation and validation_generator is not None
        snapshot = Snapshot(
            args.snapshot_path,
            args.backbone,
            args.dataset_type,
            model=model,
            last_path=args.snapshot,
            keep_last=getattr(args, "keep_last", None),
            save_best=getattr(args, "save_best", False),
            monitor="mAP" if has_map else "loss",
            mode="max" if has_map else "min",
            best_value=getattr(args, "earlier_best", (None, None))[0],
            best_epoch=getattr(args, "earlier_best", (None, None))[1],
        )
        callbacks.append(snapshot)
        callbacks.append(EpochLog(log_path(args.snapshot_path, args.backbone, args.dataset_type), append=bool(args.snapshot)))
    nan_guard = NanGuard(snapshot)
    callbacks.append(nan_guard)

    monitor_map = args.evaluation and validation_generator is not None
    if getattr(args, "lr_schedule", "plateau") == "cosine":
        if getattr(args, "time_limit", None):
            length = {"seconds": args.time_limit * 60, **clock}
        else:
            length = {"total_steps": args.epochs * args.steps}
        callbacks.append(CosineSchedule(args.lr, warmup_steps=getattr(args, "warmup_steps", 0), **length))
    else:
        if getattr(args, "warmup_steps", 0):
            callbacks.append(LinearWarmup(args.warmup_steps, args.lr))
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="loss",
                factor=args.reduce_lr_factor,
                patience=args.reduce_lr_patience,
                mode="min",
                min_delta=1e-4,
                verbose=1,
            )
        )
    if monitor_map and args.early_stopping_patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="mAP", mode="max", patience=args.early_stopping_patience, verbose=1
            )
        )
    if getattr(args, "time_limit", None):
        callbacks.append(TimeLimit(args.time_limit * 60, **clock))
    skipped = [getattr(g, "skipped_images", None) for g in (train_generator, validation_generator) if g is not None]
    summary = EpochSummary(args.batch_size, skipped=skipped, interactive=_interactive())
    callbacks.append(summary)
    return callbacks, snapshot, nan_guard, summary


def _not_a_snapshot(path, reason):
    return SetupError(
        f"snapshot {path} is not a training model ({reason}); --snapshot takes a file written by retinanet-train, "
        "not a converted inference model"
    )


def _load_snapshot_spec(path):
    """The spec of a --snapshot file, refusing an inference model from its spec alone."""
    try:
        spec = read_spec(path)
    except (ModelLoadError, SpecError) as error:
        raise SetupError(f"cannot read snapshot {path}: {error}") from None
    if spec is not None and spec.filter is not None:
        raise _not_a_snapshot(path, "its detector spec has filter settings: it is an inference model")
    return spec


def _load_snapshot(path, backbone_name=None):
    if os.path.splitext(path)[1].lower() == ".h5":
        raise SetupError(
            f"snapshot {path} is a Keras 2 (fizyr) file: its optimiser state cannot be resumed; start from its "
            f"weights with --weights {path}"
        )
    try:
        model = models.load_model(path, backbone_name=backbone_name)
    except Exception as error:  # noqa: BLE001 - any failure to read is reported with the path
        raise SetupError(f"cannot load snapshot {path}: {error}") from error
    try:
        models.assert_training_model(model)
    except AssertionError as error:
        raise SetupError(
            f"snapshot {path} is not a training model ({error}); --snapshot takes a file "
            "written by retinanet-train, not a converted inference model"
        ) from error
    if model.optimizer is None:
        raise SetupError(f"snapshot {path} has no optimiser state; it was not written by retinanet-train")
    return model


def check_resumed_flags(model, args, path):
    """Notes for the flags given with ``--snapshot`` that its compiled state decides.

    A resumed snapshot keeps its optimiser (kind, state, clipping, weight decay) and its box
    loss: a flag that asks for another is an error, not ignored. ``--lr`` replaces the saved
    learning rate (the plateau schedule starts from it; the others compute it from ``--lr``).
    Only flags the user gave count (``args.given_flags``, from ``bin/train.parse_args``).

    Raises:
        SetupError: a given flag contradicts the snapshot.
    """
    given = getattr(args, "given_flags", frozenset())
    config = model.optimizer.get_config()
    fresh_run = f"start a new run from its weights with --weights {path}"
    saved_optimizer = next(
        (name for name in constants.OPTIMIZERS if type(make_optimizer(name)) is type(model.optimizer)), None
    )  # its config's name is made unique ("adam_1"): the class says which
    saved_clipnorm = config.get("clipnorm") or 0.0
    saved_decay = config.get("weight_decay")
    saved_loss = next(
        (name for name in constants.BOX_LOSSES if type(losses.box_loss(name)) is type(model.loss["regression"])), None
    ) if isinstance(model.loss, dict) and "regression" in model.loss else None  # fmt: skip
    checks = [
        ("optimizer", "--optimizer", saved_optimizer, args.optimizer, lambda a, b: a is None or a == b),
        ("optimizer_clipnorm", "--optimizer-clipnorm", saved_clipnorm, args.optimizer_clipnorm or 0.0, np.isclose),
        ("weight_decay", "--weight-decay", saved_decay, args.weight_decay,
         lambda a, b: (a is None and not b) or (b is not None and a is not None and np.isclose(a, b))),
        ("box_loss", "--box-loss", saved_loss, args.box_loss, lambda a, b: a is None or a == b),
    ]  # fmt: skip
    for dest, flag, saved, wanted, agree in checks:
        if dest in given and not agree(saved, wanted):
            raise SetupError(
                f"{flag} {wanted}: snapshot {path} resumes with its own ({saved if saved is not None else 'none'}) "
                f"as saved; drop {flag}, or {fresh_run}"
            )
    notes = []
    if "lr" in given:
        saved_lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        if not np.isclose(saved_lr, args.lr):
            model.optimizer.learning_rate.assign(args.lr)
            notes.append(f"--lr {args.lr:g} replaces the learning rate {saved_lr:.3g} saved in {path}")
    return notes


class TrainingRun:
    """A prepared run (``prepare``): call it to train; it returns a ``TrainingResult``.

    Attributes:
        notes: lines for the user about the recipe (values taken from the snapshot's spec,
            unfinished snapshots of an interrupted run that were removed).
        snapshot_folder_lock: the ``utils.files.FolderLock`` held on the snapshot folder
            until the run ends (None without snapshots).
    """

    def __init__(self, train, notes=(), lock=None):
        self._train = train
        self.notes = tuple(notes)
        self.snapshot_folder_lock = lock

    def __call__(self):
        try:
            return self._train()
        finally:
            self.close()

    def close(self):
        """Release the snapshot folder (also done when the run ends)."""
        if self.snapshot_folder_lock is not None:
            self.snapshot_folder_lock.release()


class TrainingResult:
    """How a run ended: ``status`` 'done', 'interrupted', 'diverged' or 'output-error', a message,
    and the images skipped as unreadable ((index, path, reason) each)."""

    def __init__(self, status, message=None, skipped=()):
        self.status = status
        self.message = message
        self.skipped = list(skipped)
        self.best = None  # (path, epoch, monitor, value) of --save-best's snapshot


def check_anchor_coverage(generator):
    """Stop a run whose boxes none get a positive anchor; warn when most get none.

    The matching is training's (``inspection.anchor_coverage``, on a sample of the images,
    from their headers), the one ``retinanet-debug`` reports box by box.

    Raises:
        SetupError: no box gets a positive anchor: the model could learn nothing.
    """
    from keras_retinanet.inspection import UNMATCHED_WARNING_FRACTION, anchor_coverage

    coverage = anchor_coverage(generator)
    if not coverage.boxes:
        return coverage
    advice = (
        "give anchor sizes that fit the boxes in a config.ini (--config), or other --image-min-side / "
        "--image-max-side; retinanet-debug --no-gui shows the boxes without an anchor"
    )
    if coverage.unmatched == coverage.boxes:
        raise SetupError(f"training would learn nothing: {coverage.describe()}; {advice}")
    if coverage.unmatched > UNMATCHED_WARNING_FRACTION * coverage.boxes:
        warnings.warn(f"{coverage.describe()}: training ignores those boxes; {advice}", stacklevel=2)
    return coverage


MAX_LISTED_IMAGES = 5


def _interactive():
    import sys

    return hasattr(sys.stdout, "isatty") and sys.stdout.isatty()


def fit_run_anchors(spec, train_generator, validation_generator=None):
    """Fit the anchor sizes to the training boxes (``inspection.fit_anchors``) for a new model.

    The generators build their targets on the fitted anchors and the returned spec records
    them, so every model of the run (and every tool reading it) uses them.

    Returns:
        (spec with the fitted anchors, one-line note of the fit).
    """
    from keras_retinanet.inspection import fit_anchors

    fit = fit_anchors(train_generator)
    for generator in (train_generator, validation_generator):
        if generator is not None:
            generator.anchor_params = fit.anchor_params
    sizes = " ".join(f"{size:g}" for size in fit.anchor_params.sizes)
    note = (
        f"anchor sizes fitted to the training boxes: {sizes} (x{fit.factor:g}); boxes without a positive anchor "
        f"{fit.before.unmatched} -> {fit.after.unmatched} of {fit.after.boxes} in {fit.after.images} images"
    )
    return spec.replace(anchors=AnchorSpec.from_parameters(fit.anchor_params)), note


UPSCALE_NOTE_FACTOR = 1.5  # a note when the default sizes enlarge the typical image more than this


def upscaling_notes(generator, spec, given=False, sample=16):
    """A note when the image sizes enlarge the typical training image a lot (none if ``given``).

    The default 800 / 1333 sides suit photographs; small images (aerial tiles, crops) are
    then enlarged 2-3x: slower steps, objects larger than they will be at inference if
    the images are given at their size there. The median scale of up to ``sample``
    images (read from their headers) is compared with ``UPSCALE_NOTE_FACTOR``.
    """
    if given or spec.no_resize or generator.size() == 0:
        return []
    from keras_retinanet.utils.image import compute_resize_scale

    indices = np.linspace(0, generator.size() - 1, min(sample, generator.size())).astype(int)
    sizes = []
    for index in indices:
        try:
            sizes.append(generator.image_size(index))
        except Exception:  # noqa: BLE001 - unreadable files are reported by check_image_files
            continue
    if not sizes:
        return []
    scales = [compute_resize_scale((h, w, 3), spec.image_min_side, spec.image_max_side) for h, w in sizes]
    scale = float(np.median(scales))
    if scale <= UPSCALE_NOTE_FACTOR:
        return []
    height, width = sizes[len(sizes) // 2]
    return [
        f"the training images are about {width}x{height} px: --image-min-side {spec.image_min_side} / "
        f"--image-max-side {spec.image_max_side} enlarge them x{scale:.1f}; give the sides of your images "
        "(e.g. --image-min-side {0} --image-max-side {1}) to train at their size".format(min(height, width), max(height, width))
    ]


def check_image_files(train_generator, validation_generator=None, full=False):
    """Stop before training when image files are missing (or, with ``full``, do not decode).

    Unreadable images met later are skipped and reported (``Generator.skipped_images``);
    missing files are a mistake worth fixing first, and cheap to find.

    Raises:
        SetupError: naming the first files and how many there are.
    """
    messages = []
    for generator, what in ((train_generator, "training"), (validation_generator, "validation")):
        if generator is None:
            continue
        problems = [(path, "missing") for _, path in generator.missing_images()]
        if full and not problems:
            problems = [(path, reason) for _, path, reason in generator.check_images()]
        if problems:
            listed = ", ".join(f"{path} ({reason})" for path, reason in problems[:MAX_LISTED_IMAGES])
            more = f", and {len(problems) - MAX_LISTED_IMAGES} more" if len(problems) > MAX_LISTED_IMAGES else ""
            messages.append(f"{len(problems)} {what} images cannot be read: {listed}{more}")
    if messages:
        raise SetupError("; ".join(messages))


def _has_validation(args):
    if args.dataset_type == "csv":
        return bool(getattr(args, "val_annotations", None))
    return bool(getattr(args, "val_set", None))


def _input_files(args):
    names = ("annotations", "classes", "val_annotations", "snapshot", "weights", "config")
    return [getattr(args, name) for name in names if getattr(args, name, None)]


def _plan_snapshots(args, backbone_name, initial_epoch):
    """Lock the snapshot folder, check the snapshots this run will write, clean up what a killed run left.

    Returns:
        (``FolderLock`` or None, notes).

    Raises:
        OutputError: the folder is used by another run, is not writable, or a snapshot this
            run would write exists already (without ``--overwrite``) or is one of its inputs.
    """
    from keras_retinanet.callbacks.training import snapshot_path
    from keras_retinanet.utils.files import FolderLock, OutputPlan, remove_stale_temporaries

    notes = []
    tensorboard_dir = getattr(args, "tensorboard_dir", "")
    plan = OutputPlan(inputs=_input_files(args), overwrite=getattr(args, "overwrite", False))
    if tensorboard_dir:
        plan.check_folder(tensorboard_dir, "--tensorboard-dir")
    if not args.snapshots:
        return None, notes
    plan.check_folder(args.snapshot_path, "--snapshot-path folder")
    lock = FolderLock(
        args.snapshot_path, "another retinanet-train run", "wait for it to end, or give another --snapshot-path"
    ).acquire()
    try:
        for epoch in range(initial_epoch + 1, args.epochs + 1):
            plan.check(snapshot_path(args.snapshot_path, backbone_name, args.dataset_type, epoch), "snapshot")
        if getattr(args, "save_best", False):
            best = best_snapshot_path(args.snapshot_path, backbone_name, args.dataset_type)
            log = log_path(args.snapshot_path, backbone_name, args.dataset_type)
            monitor = "mAP" if args.evaluation and _has_validation(args) else "loss"
            earlier = best_in_log(log, monitor, "max" if monitor == "mAP" else "min") if args.snapshot else (None, None)
            if earlier[0] is not None and os.path.isfile(best):
                OutputPlan(inputs=_input_files(args), overwrite=True).check(best, "best snapshot")  # not an input
                args.earlier_best = earlier  # a resumed run goes on keeping its best: beat it to replace it
                notes.append(f"best snapshot so far: epoch {earlier[1]} ({monitor} {earlier[0]:.4f}), {best}")
            else:
                plan.check(best, "best snapshot")
        if not args.snapshot:  # a resumed run appends to its log
            plan.check(log_path(args.snapshot_path, backbone_name, args.dataset_type), "training log")
        for path in remove_stale_temporaries(args.snapshot_path):
            notes.append(f"removed {path}: an unfinished snapshot of an interrupted run")
    except BaseException:
        lock.release()
        raise
    return lock, notes


def _worker_note(args, role, replicas):
    """What a worker of a multi-worker run does, for the notes."""
    per_replica = args.batch_size // replicas
    local = replicas // role.count  # MultiWorkerMirroredStrategy: the same devices on every worker
    loads = f"this worker loads {per_replica * local} of the {args.batch_size} images of every batch"
    if local > 1:
        loads += f" ({per_replica} on each of its {local} replicas)"
    writes = (
        "it evaluates and writes the snapshots, the log and TensorBoard"
        if role.is_chief
        else "the chief evaluates and writes the snapshots, the log and TensorBoard; this worker writes nothing"
    )
    return f"{role.describe()}: global batch {args.batch_size} over {replicas} replicas; {loads}; {writes}"


def prepare(args):
    """Check the inputs and build generators, models and callbacks; return the ``TrainingRun``.

    ``args`` (retinanet-train's parsed arguments) is not changed. The snapshot folder is
    locked and its outputs checked first, so that a bad folder fails at once.

    Raises:
        SetupError, OutputError, ValueError, OSError: bad input, found before the first step.
    """
    import argparse

    args = argparse.Namespace(**vars(args))
    args.config_parsed = read_config_file(args.config) if args.config else None
    recipe = training_recipe(args)
    spec = recipe.spec
    # first, before TensorFlow runs an op: its thread pools, then a MultiWorkerMirroredStrategy
    use_parallel_ops_for(spec.backbone, spec.image_max_side, spec.no_resize)
    strategy = create_strategy(args.strategy, args.multi_gpu)
    role = read_tf_config().role if in_multi_worker_mode(strategy) else ONLY_WORKER
    if not role.is_chief:  # the chief writes the run's files (and locks their folder); the others nothing
        args.snapshots = False
        args.tensorboard_dir = ""
    if args.seed is not None:
        keras.utils.set_random_seed(args.seed)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")

    notes = list(recipe.notes)
    notes += initial_weights_notes(args)
    args.backbone = spec.backbone  # names the snapshots
    backbone = models.backbone(args.backbone)
    initial_epoch = args.initial_epoch
    if args.snapshot:
        _load_snapshot_spec(args.snapshot)  # the kind of file first: an inference model is no snapshot
    if initial_epoch is None and args.snapshot:
        saved_epoch = getattr(read_spec(args.snapshot), "epoch", None)
        named_epoch = epoch_from_snapshot(args.snapshot)
        initial_epoch = saved_epoch if saved_epoch is not None else named_epoch
        if initial_epoch is None:
            raise SetupError(
                f"cannot tell how many epochs {args.snapshot} has completed (neither its spec nor its name say): "
                "give --initial-epoch"
            )
    initial_epoch = initial_epoch or 0
    if initial_epoch >= args.epochs:
        raise SetupError(f"nothing to do: the run starts at epoch {initial_epoch} and --epochs is {args.epochs}")
    folder_existed = os.path.isdir(args.snapshot_path) if args.snapshots else True
    lock, snapshot_notes = _plan_snapshots(args, args.backbone, initial_epoch)
    notes += snapshot_notes
    try:
        return _prepare_run(args, spec, backbone, initial_epoch, notes, lock, strategy, role)
    except BaseException:
        if lock is not None:
            lock.release()
        if not folder_existed:  # leave no empty snapshot folder behind a run that never started
            try:
                os.rmdir(args.snapshot_path)
            except OSError:
                pass
        raise


def _prepare_run(args, spec, backbone, initial_epoch, notes, lock, strategy, role):
    """The rest of ``prepare``, with the snapshot folder locked (by the chief)."""
    replicas = strategy.num_replicas_in_sync
    if args.batch_size < replicas or args.batch_size % replicas:
        raise SetupError(
            f"--batch-size ({args.batch_size}) must be a multiple of the number of replicas ({replicas})"
        )
    multi_worker = role.count > 1
    group = WorkerGroup(strategy, role) if multi_worker else None
    if multi_worker:
        notes.append(_worker_note(args, role, replicas))
        if args.seed is None:  # the workers must cut the same batches: one order of the images for all
            args.data_seed = round(group.from_chief([float(secrets.randbits(31))])[0])

    train_generator, validation_generator = create_generators(args, backbone.preprocess_image, spec)
    if train_generator.size() == 0:
        raise SetupError("the training set has no images")
    if validation_generator is not None and validation_generator.size() == 0:
        validation_generator = None
    class_names = class_names_of(train_generator)
    if args.steps is None:
        args.steps = steps_per_epoch(train_generator)
    notes += upscaling_notes(train_generator, spec, given=args.image_min_side is not None or args.image_max_side is not None)
    check_image_files(train_generator, validation_generator, full=getattr(args, "check_images", False))
    if getattr(args, "fit_anchors", False):
        spec, note = fit_run_anchors(spec, train_generator, validation_generator)
        notes.append(note)
    check_anchor_coverage(train_generator)

    with strategy.scope():
        if args.snapshot:
            model = _load_snapshot(args.snapshot)
            notes += check_resumed_flags(model, args, args.snapshot)
            saved = models.model_spec(model)
            try:
                check_class_names(saved, class_names, source=args.snapshot, what="the training set's class list")
            except SpecConflictError as error:
                raise SetupError(str(error)) from None
            predicted = model.outputs[list(model.output_names).index("classification")].shape[-1]
            if predicted != train_generator.num_classes():
                raise SetupError(
                    f"snapshot {args.snapshot} predicts {predicted} classes, the training set has "
                    f"{train_generator.num_classes()} (ids 0 .. {train_generator.num_classes() - 1}): resume with the "
                    "class list the snapshot was trained with"
                )
            # the snapshots of this run record its recipe (an older snapshot without a spec gets one)
            run_spec = (saved or architecture_spec(model)).merged(spec)
            if run_spec.class_names is None:
                run_spec = run_spec.replace(class_names=class_names)
            model = models.with_spec(model, run_spec)
            training_model = model
            prediction_model = retinanet_bbox(
                model=model, anchor_params=spec.anchor_params, pyramid_levels=spec.pyramid_levels
            )
        else:
            pretrained = bool(args.weights or args.imagenet_weights)
            freeze_bn = pretrained if args.freeze_bn is None else args.freeze_bn
            backbone_weights = "imagenet" if args.imagenet_weights and not args.weights else None
            try:
                model, training_model, prediction_model = create_models(
                    backbone.retinanet,
                    train_generator.num_classes(),
                    weights=args.weights,
                    freeze_backbone=args.freeze_backbone,
                    lr=args.lr,
                    optimizer_clipnorm=args.optimizer_clipnorm,
                    config=args.config_parsed,
                    backbone_weights=backbone_weights,
                    freeze_bn=freeze_bn,
                    feature_size=args.feature_size,
                    submodel_depth=args.head_depth,
                    head_norm=getattr(args, "head_norm", None),
                    backbone_norm=getattr(args, "backbone_norm", None),
                    optimizer=getattr(args, "optimizer", "adam"),
                    box_loss=getattr(args, "box_loss", "smooth_l1"),
                    weight_decay=getattr(args, "weight_decay", None),
                    spec=spec.replace(class_names=class_names),
                )
            except Exception as error:  # noqa: BLE001 - e.g. no network for the ImageNet download
                if backbone_weights != "imagenet":
                    raise
                raise SetupError(
                    f"cannot get the ImageNet weights of {args.backbone} ({error}); "
                    "train from scratch with --no-weights or give a file with --weights"
                ) from error
    # a trainable BatchNormalization normalises by the statistics of the global batch, as on one device
    synchronize_batch_norm(model, replicas > 1)
    if multi_worker:
        # evaluation runs on the chief alone: its inference model must run no collective op
        # (one built in the strategy's scope would gather its outputs from every worker)
        prediction_model = (
            retinanet_bbox(model=model, anchor_params=spec.anchor_params, pyramid_levels=spec.pyramid_levels)
            if role.is_chief
            else None
        )
    workers = tf.data.AUTOTUNE if args.workers < 0 else max(1, args.workers)

    def train_input(shard=None):
        return build_dataset(
            train_generator, num_parallel_calls=workers, prefetch=args.max_queue_size, repeat=True,
            seed=_data_seed(args), shard=shard,
        )  # fmt: skip

    def validation_input(shard=None):
        return build_dataset(validation_generator, shuffle=False, num_parallel_calls=workers, repeat=False, shard=shard)

    # a multi-worker run: each worker loads only its replicas' slices of every batch
    train_data = distribute_input(strategy, train_input) if multi_worker else train_input()
    validation_data = None
    if args.compute_val_loss and validation_generator is not None:
        validation_data = distribute_input(strategy, validation_input) if multi_worker else validation_input()
    callbacks, snapshot, nan_guard, _ = create_callbacks(
        model, training_model, prediction_model, validation_generator, args, train_generator,
        workers=group,
    )  # fmt: skip

    def train():
        try:
            training_model.fit(
                train_data,
                steps_per_epoch=args.steps,
                epochs=args.epochs,
                initial_epoch=initial_epoch,
                validation_data=validation_data,
                callbacks=callbacks,
                shuffle=False,  # the dataset shuffles its groups itself
                verbose=1 if _interactive() else 0,  # in a log file, EpochSummary's line per epoch is the progress
            )
        except KeyboardInterrupt:
            return result("interrupted", "interrupted; the snapshots written so far are kept")
        except OutputError as error:
            return result("output-error", f"{error}; the snapshots written before are kept")
        if nan_guard.message:
            return result("diverged", nan_guard.message)
        return result("done")

    def result(status, message=None):
        skipped = [item for g in (train_generator, validation_generator) if g is not None for item in g.skipped_images.items()]
        outcome = TrainingResult(status, message, skipped)
        if snapshot is not None and snapshot.best_path and snapshot.best_epoch is not None:
            outcome.best = (snapshot.best_path, snapshot.best_epoch, snapshot.monitor, snapshot.best_value)
        return outcome

    return TrainingRun(train, notes, lock)
