"""retinanet-evaluate: Evaluate a RetinaNet model: VOC mAP and COCO metrics."""
import argparse
import sys

from keras_retinanet.bin import not_implemented


def parse_args(args):
    parser = argparse.ArgumentParser(prog="retinanet-evaluate", description="Evaluate a RetinaNet model: VOC mAP and COCO metrics.")
    return parser.parse_args(args)


def main(args=None):
    parse_args(sys.argv[1:] if args is None else args)
    return not_implemented("retinanet-evaluate")


if __name__ == "__main__":
    sys.exit(main())
