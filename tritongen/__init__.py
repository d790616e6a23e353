"""tritongen: from a trained PyTorch model to a Triton model repository that is proven to serve."""

__version__ = "0.1.0"
