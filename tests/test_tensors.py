"""``tritongen.tensors``: one input or output as the build declares it."""

from __future__ import annotations

import pytest

from tritongen.errors import TritongenError
from tritongen.tensors import MAX_TENSOR_DIMS, TensorSpec, tensor_spec_from_arg


def test_dims_past_what_a_batched_array_holds_are_one_error():
    """33 dims given (32 in a spec file, which allowed 32) were numpy's ValueError traceback once the batch
    dimension was added to make the samples."""
    assert len(TensorSpec("x", "FP32", (1,) * MAX_TENSOR_DIMS).dims) == MAX_TENSOR_DIMS
    with pytest.raises(TritongenError, match="tensor 'x' has 32 dimensions, more than the 31"):
        TensorSpec("x", "FP32", (1,) * 32)
    with pytest.raises(TritongenError, match="has 33 dimensions"):
        tensor_spec_from_arg("x:FP32:" + ",".join(["1"] * 33))
