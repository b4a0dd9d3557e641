"""Inference: loading trained models, batched prediction, mask files, CUDA-graph replay."""
