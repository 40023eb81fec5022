"""torchvision's RetinaNet trained from scratch for a wall-time budget on a CSV dataset (the peer of
bench/train_budget.py; run it with the interpreter of a venv that has torch and torchvision).

The recipe of ../shared/BENCHMARKS.md: ``retinanet_resnet50_fpn(weights=None,
weights_backbone=None)``, SGD lr 0.01 momentum 0.9 weight decay 1e-4, batch 1, random
horizontal flips, gradient norm clipped at 10, ``min_size`` / ``max_size`` at the images'
own size (no resize), 2 threads. The clock starts when the first training step starts.
Then it detects on the held-out images (torchvision's defaults: score > 0.05, NMS 0.5,
300 per image) and writes them as JSON::

    {"images_seen": N, "train_seconds": S, "detections": {path: [[x1, y1, x2, y2, score, label], ...]}}

with labels as class ids of classes.csv and boxes in image pixels. Reads fizyr's CSV format
(``path,x1,y1,x2,y2,class`` lines, ``path,,,,,`` for an image without objects; paths
relative to the CSV's folder). Only torch, torchvision and Pillow are needed.

    VENV/bin/python bench/peers/torchvision_train.py train.csv classes.csv val.csv out.json --minutes 20
"""
import argparse
import csv
import json
import os
import random
import sys
import time


def read_classes(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        return {row[0]: int(row[1]) for row in csv.reader(f) if row}


def read_annotations(path, classes):
    """{image path: [(x1, y1, x2, y2, class id), ...]} in file order."""
    base = os.path.dirname(os.path.abspath(path))
    images = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for row in csv.reader(f):
            if not row:
                continue
            image = os.path.join(base, row[0])
            boxes = images.setdefault(image, [])
            if row[1]:
                boxes.append((*[float(v) for v in row[1:5]], classes[row[5]]))
    return images


def main(args=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train")
    parser.add_argument("classes")
    parser.add_argument("val")
    parser.add_argument("output")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(args)

    import numpy as np
    import torch
    import torchvision
    from PIL import Image

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    classes = read_classes(args.classes)
    train = read_annotations(args.train, classes)
    val = read_annotations(args.val, classes)

    def load(path):
        array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()

    first = load(next(iter(train)))
    side_min, side_max = min(first.shape[1:]), max(first.shape[1:])
    # torchvision counts the background in num_classes: labels 1..C
    model = torchvision.models.detection.retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=len(classes) + 1, min_size=side_min, max_size=side_max
    )
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=0.01, momentum=0.9, weight_decay=1e-4)

    paths = list(train)
    seen, start = 0, time.monotonic()
    while time.monotonic() - start < args.minutes * 60:
        random.shuffle(paths)
        for path in paths:
            if time.monotonic() - start >= args.minutes * 60:
                break
            image = load(path)
            boxes = torch.tensor([b[:4] for b in train[path]], dtype=torch.float32).reshape(-1, 4)
            labels = torch.tensor([b[4] + 1 for b in train[path]], dtype=torch.int64)
            if random.random() < 0.5:
                image = image.flip(-1)
                width = image.shape[-1]
                boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
            losses = model([image], [{"boxes": boxes, "labels": labels}])
            loss = sum(losses.values())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 10.0)
            optimizer.step()
            seen += 1
            if seen % 50 == 0:
                print(f"{seen} images, {time.monotonic() - start:.0f} s, loss {float(loss):.3f}", flush=True)
    train_seconds = time.monotonic() - start

    model.eval()
    detections = {}
    with torch.inference_mode():
        for path in val:
            output = model([load(path)])[0]
            rows = torch.cat(
                [output["boxes"], output["scores"][:, None], (output["labels"] - 1)[:, None].float()], 1
            )
            detections[path] = rows.tolist()
    result = {"images_seen": seen, "train_seconds": train_seconds, "detections": detections}
    temporary = args.output + ".tmp"
    with open(temporary, "w") as f:
        json.dump(result, f)
    os.replace(temporary, args.output)
    print(f"torchvision: {seen} images in {train_seconds:.0f} s -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
