"""Dataset generators (CSV, COCO, Pascal VOC) and the tf.data input pipeline."""
