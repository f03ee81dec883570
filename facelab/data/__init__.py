"""Readers, labellers, splits and the input pipeline. Nothing here but pipeline.py imports TensorFlow."""
