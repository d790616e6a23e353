"""What a new version's config changes for every version (tritongen/config_changes.py)."""

from __future__ import annotations

from tritongen.config_changes import setting_changes


def _config(max_batch: int, preferred: list[int]):
    from tritongen.validate import config_pb2

    config = config_pb2().ModelConfig(max_batch_size=max_batch)
    config.dynamic_batching.preferred_batch_size.extend(preferred)
    return config


def test_no_preferred_batch_sizes_read_as_what_triton_does_with_none():
    """A tuned config without preferred sizes was shown as "[] -> [4, 8]" beside perf's "[4,8] -> [16]" for the
    same file (Triton batches up to max_batch_size where none is preferred)."""
    assert setting_changes(_config(16, []), _config(16, [4, 8])) == ["preferred batch sizes none (up to 16) -> [4, 8]"]
    assert setting_changes(_config(8, [4, 8]), _config(8, [])) == ["preferred batch sizes [4, 8] -> none (up to 8)"]
    assert setting_changes(_config(8, [4, 8]), _config(8, [4, 8])) == []
