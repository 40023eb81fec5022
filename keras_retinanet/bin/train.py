"""retinanet-train: Train a RetinaNet detector on CSV, COCO or Pascal VOC data."""
import argparse
import sys

from keras_retinanet.bin import not_implemented


def parse_args(args):
    parser = argparse.ArgumentParser(prog="retinanet-train", description="Train a RetinaNet detector on CSV, COCO or Pascal VOC data.")
    return parser.parse_args(args)


def main(args=None):
    parse_args(sys.argv[1:] if args is None else args)
    return not_implemented("retinanet-train")


if __name__ == "__main__":
    sys.exit(main())
