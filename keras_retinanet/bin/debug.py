"""retinanet-debug: Inspect a dataset: annotations, anchors and augmentation."""
import argparse
import sys

from keras_retinanet.bin import not_implemented


def parse_args(args):
    parser = argparse.ArgumentParser(prog="retinanet-debug", description="Inspect a dataset: annotations, anchors and augmentation.")
    return parser.parse_args(args)


def main(args=None):
    parse_args(sys.argv[1:] if args is None else args)
    return not_implemented("retinanet-debug")


if __name__ == "__main__":
    sys.exit(main())
