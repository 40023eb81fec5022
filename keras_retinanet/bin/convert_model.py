"""retinanet-convert-model: Convert a training snapshot into an inference model."""
import argparse
import sys

from keras_retinanet.bin import not_implemented


def parse_args(args):
    parser = argparse.ArgumentParser(prog="retinanet-convert-model", description="Convert a training snapshot into an inference model.")
    return parser.parse_args(args)


def main(args=None):
    parse_args(sys.argv[1:] if args is None else args)
    return not_implemented("retinanet-convert-model")


if __name__ == "__main__":
    sys.exit(main())
