"""Training callbacks: Evaluate (mAP per epoch) and CocoEval."""
