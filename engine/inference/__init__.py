"""Inference: loading trained models, batched prediction, post-processing to mask files, CUDA-graph replay."""
