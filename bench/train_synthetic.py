"""Convergence run: retinanet-train from scratch on synthetic shapes, mAP@0.5 on a held-out split.

Runs the real command-line tool in a subprocess (no pretrained weights), follows its
per-epoch summary lines, and prints the curve (epoch, loss, mAP, wall time) as a
Markdown table. Stops at the time budget, or once mAP reaches --target when
--stop-at-target is given. The tool's whole output is kept in WORKDIR/train.log.

Defaults: mobilenet128_0.25 with a 64-channel FPN and heads (--feature-size; the paper's
256 makes each step about 8x slower on a CPU, see bench/train_step.py), 128 px images with
shapes of 32-64 px, 1024 training and 64 held-out images, batch 8, 64 steps per epoch,
Adam 1e-3 after a 64-step linear warmup.

    python bench/train_synthetic.py --minutes 30
    python bench/train_synthetic.py --feature-size 256 --minutes 30   # the paper's head size
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

SUMMARY = re.compile(r"epoch (\d+) \|.*?\| loss (\d+\.\d+).*?\| mAP (\d\.\d+)")


def parse_args(args):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="training time budget")
    parser.add_argument("--target", type=float, default=0.9, help="mAP@0.5 to reach")
    parser.add_argument("--stop-at-target", action="store_true", help="stop once the target is reached")
    parser.add_argument("--backbone", default="mobilenet128_0.25")
    parser.add_argument("--feature-size", type=int, default=64, help="FPN and head channels (the tool's default: 256)")
    parser.add_argument("--head-depth", type=int, default=None, help="hidden conv layers per head (default: the tool's, 4)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--train-images", type=int, default=1024)
    parser.add_argument("--val-images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=64, help="steps per epoch")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=64, help="linear LR warmup (steps)")
    parser.add_argument("--reduce-lr-patience", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more retinanet-train flags (must come last: everything after it is passed on)")
    parser.add_argument("--workdir", help="where data and snapshots go (default: a temporary folder)")
    return parser.parse_args(args)


def main(args=None):
    args = parse_args(sys.argv[1:] if args is None else args)
    workdir = args.workdir or tempfile.mkdtemp(prefix="retinanet_convergence_")
    data = os.path.join(workdir, "data")
    from keras_retinanet.utils import synthetic

    paths = synthetic.make_dataset(
        data,
        {"train": args.train_images, "val": args.val_images},
        seed=args.seed,
        image_size=args.size,
        min_size=args.size // 4,
        max_size=args.size // 2,
    )
    command = [
        sys.executable, "-m", "keras_retinanet.bin.train",
        "--no-weights",
        "--backbone", args.backbone,
        "--batch-size", str(args.batch_size),
        "--epochs", "1000",
        "--steps", str(args.steps),
        "--lr", str(args.lr),
        "--warmup-steps", str(args.warmup_steps),
        "--feature-size", str(args.feature_size),
        "--reduce-lr-patience", str(args.reduce_lr_patience),
        "--image-min-side", str(args.size),
        "--image-max-side", str(args.size),
        "--snapshot-path", os.path.join(workdir, "snapshots"),
        "--tensorboard-dir", "",
        "--seed", str(args.seed),
    ]  # fmt: skip
    if args.head_depth is not None:
        command += ["--head-depth", str(args.head_depth)]
    command += args.extra
    command += ["csv", paths["train"], paths["classes"], "--val-annotations", paths["val"]]
    print("command:", " ".join(command[1:]), flush=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
    )
    curve = []
    reached = None
    log_path = os.path.join(workdir, "train.log")
    print(f"the tool's output goes to {log_path}", flush=True)
    log = open(log_path, "w")
    try:
        for line in process.stdout:
            log.write(line)
            match = SUMMARY.search(line)
            if match:
                elapsed = time.perf_counter() - start
                epoch, loss, mean_ap = int(match.group(1)), float(match.group(2)), float(match.group(3))
                curve.append((epoch, loss, mean_ap, elapsed))
                print(f"epoch {epoch:3d}  loss {loss:.4f}  mAP {mean_ap:.4f}  {elapsed / 60:.1f} min", flush=True)
                if reached is None and mean_ap >= args.target:
                    reached = curve[-1]
                    if args.stop_at_target:
                        break
            if time.perf_counter() - start > args.minutes * 60:
                break
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()

    print()
    print("| epoch | images seen | loss | mAP@0.5 (val) | wall time (min) |")
    print("|---:|---:|---:|---:|---:|")
    for epoch, loss, mean_ap, elapsed in curve:
        seen = epoch * args.steps * args.batch_size
        print(f"| {epoch} | {seen} | {loss:.4f} | {mean_ap:.4f} | {elapsed / 60:.1f} |")
    best = max(curve, key=lambda row: row[2]) if curve else None
    if best:
        print(f"\nbest mAP {best[2]:.4f} at epoch {best[0]} ({best[3] / 60:.1f} min)")
    if reached:
        print(f"target mAP {args.target} reached at epoch {reached[0]} after {reached[3] / 60:.1f} min")
        return 0
    print(f"target mAP {args.target} not reached within {args.minutes} min")
    return 1


if __name__ == "__main__":
    sys.exit(main())
