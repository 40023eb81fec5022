"""retinanet-predict: Run a RetinaNet model on images and write detections."""
import argparse
import sys

from keras_retinanet.bin import not_implemented


def parse_args(args):
    parser = argparse.ArgumentParser(prog="retinanet-predict", description="Run a RetinaNet model on images and write detections.")
    return parser.parse_args(args)


def main(args=None):
    parse_args(sys.argv[1:] if args is None else args)
    return not_implemented("retinanet-predict")


if __name__ == "__main__":
    sys.exit(main())
