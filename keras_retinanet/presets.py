"""Named training recipes: ``retinanet-train --preset NAME`` sets the defaults of several flags.

A flag given on the command line wins over the preset. The figures behind each choice are
in the README ("Training from scratch") and come from ``bench/train_budget.py``.
"""

PRESETS = {
    "scratch": {
        "description": "from scratch (no pretrained weights) on a CPU budget",
        "flags": {
            "imagenet_weights": False,
            "backbone": "mobilenet224_1.0",
            "feature_size": 64,
            "batch_size": 1,
            "lr": 1e-3,
            "warmup_steps": 64,
            "lr_schedule": "cosine",
            "optimizer_clipnorm": 10.0,
            "head_norm": "group",
            "backbone_norm": "group",
            "box_loss": "giou",
            "fit_anchors": True,
        },
    },
}


# what shapes a new model (its layers, anchors, losses): a --snapshot keeps its own, so resuming
# with a preset leaves these out
NEW_MODEL_ONLY = (
    "imagenet_weights", "backbone", "feature_size", "head_depth", "head_norm", "backbone_norm", "fit_anchors", "box_loss",
)  # fmt: skip


def preset_defaults(name, resuming=False):
    """{argparse dest: value} of preset ``name`` (without ``NEW_MODEL_ONLY`` when ``resuming``).

    Raises:
        ValueError: unknown preset.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    flags = dict(PRESETS[name]["flags"])
    return {key: value for key, value in flags.items() if not (resuming and key in NEW_MODEL_ONLY)}


def describe(name):
    """One line: what the preset is for and the flags it sets."""
    def flag(key, value):
        if key == "imagenet_weights":
            return "--imagenet-weights" if value else "--no-weights"
        text = "" if value is True else f" {value:g}" if isinstance(value, float) else f" {value}"
        return f"--{key.replace('_', '-')}{text}"

    flags = " ".join(flag(key, value) for key, value in PRESETS[name]["flags"].items())
    return f"{name}: {PRESETS[name]['description']} ({flags})"
