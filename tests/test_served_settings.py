"""The batching and instances a model is served with, read alike from a server's config answer and a config.pbtxt."""

import json

import pytest

from tests.conftest import DOUBLE_CONFIG
from tritongen.served_settings import (
    ServedSettings,
    comparable_settings,
    served_settings_from_config,
    served_settings_from_model_config,
)


def _parsed(text: str):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_a_file_and_the_config_triton_serves_from_it_compare_equal():
    served = {  # Triton's answer for DOUBLE_CONFIG: the empty preferred list filled, int64 as a string (gRPC JSON)
        "name": "double",
        "max_batch_size": 8,
        "instance_group": [{"name": "double_0", "kind": "KIND_CPU", "count": 1, "gpus": []}],
        "dynamic_batching": {"preferred_batch_size": [8], "max_queue_delay_microseconds": "20000"},
    }
    from_file = served_settings_from_model_config(_parsed(DOUBLE_CONFIG))
    assert from_file == served_settings_from_config(served) == ServedSettings(8, 1, True, (8,), 20000)
    assert from_file.text() == "max batch 8, 1 instance, dynamic batching (preferred 8; queue delay 20000 us)"


def test_instances_are_counted_over_every_group_and_left_to_triton_where_a_group_gives_no_count():
    settings = served_settings_from_model_config(
        _parsed("max_batch_size: 4 instance_group [{ count: 3 }, { count: 1 }]")
    )
    assert (settings.instances, settings.dynamic_batching) == (4, False)
    assert settings.text() == "max batch 4, 4 instances, no dynamic batching"
    # Triton decides these by backend and host (2 per CPU for ONNX Runtime, 1 for Python, one per GPU): not compared
    for groups in (
        "",
        "instance_group [{ kind: KIND_CPU }]",
        "instance_group [{ count: 0 }]",
        "instance_group [{ count: -1 }]",
    ):
        assert served_settings_from_model_config(_parsed(f"max_batch_size: 4 {groups}")).instances is None
    assert served_settings_from_config({}) == ServedSettings(0, None, False)
    assert ServedSettings(8, None, False).differences(ServedSettings(8, 2, False)) == []
    assert ServedSettings(8, None, False).text() == "max batch 8, instances as Triton places them, no dynamic batching"


def test_an_ensemble_and_a_config_onnx_runtime_may_complete_have_no_batching_to_compare():
    assert served_settings_from_config({"platform": "ensemble", "max_batch_size": 8}) is None
    completed = served_settings_from_model_config(_parsed('backend: "onnxruntime" instance_group [{ count: 2 }]'))
    assert completed == ServedSettings(None, 2, None, None, None)
    assert completed.differences(ServedSettings(4, 2, True, (4,), 0)) == []
    python = served_settings_from_model_config(_parsed('backend: "python" instance_group [{ count: 1 }]'))
    assert python == ServedSettings(0, 1, False)  # the Python backend completes nothing


def test_the_differences_name_each_changed_setting_before_and_after():
    before = ServedSettings(8, 2, True, (4, 8), 100)
    assert before.differences(before) == []
    assert before.differences(ServedSettings(16, 2, True, tuple(range(1, 17)), 0)) == [
        "max batch 8 -> 16",
        "preferred batch sizes [4,8] -> [1,2,3,4,5,6,7,8,...]",
        "queue delay (us) 100 -> 0",
    ]


@pytest.mark.parametrize(
    "config, problem",
    [
        ({"max_batch_size": True}, "max_batch_size is not an integer"),
        ({"max_batch_size": "8x"}, "max_batch_size is not an integer"),
        ({"max_batch_size": -1}, "max_batch_size is -1, not from 0"),
        ({"max_batch_size": 10**16}, "is 10000000000000000, not from 0"),
        ({"instance_group": {"count": 2}}, "instance_group is not a list"),
        ({"dynamic_batching": []}, "dynamic_batching is not a mapping"),
        ({"dynamic_batching": {"preferred_batch_size": 8}}, "preferred_batch_size is not a list"),
        ({"dynamic_batching": {"max_queue_delay_microseconds": "1" * 22}}, "not an integer"),
        ({"dynamic_batching": {"max_queue_delay_microseconds": "1" * 17}}, "max_queue_delay_microseconds is 1111"),
        ({"dynamic_batching": {"max_queue_delay_microseconds": str(2**64)}}, "outside int64"),
    ],
)
def test_a_config_answer_that_is_not_what_triton_writes_is_refused(config, problem):
    with pytest.raises(ValueError, match=problem):
        served_settings_from_config(json.loads(json.dumps(config)))


def test_a_file_past_what_perf_records_is_not_compared_but_an_ordinary_one_is():
    far = DOUBLE_CONFIG.replace(
        "max_queue_delay_microseconds: 20000", "max_queue_delay_microseconds: 10000000000000000"
    )
    assert far != DOUBLE_CONFIG  # Triton loads this delay; perf never records it
    assert comparable_settings(_parsed(far)) is None
    assert comparable_settings(_parsed(DOUBLE_CONFIG)) == ServedSettings(8, 1, True, (8,), 20000)


def test_a_sequence_model_is_said_to_batch_by_its_sequence_batcher_and_its_batching_is_not_compared():
    """perf on a sequence model said 'no dynamic batching' while its sequence batcher batched 4.14 on average."""
    config = _parsed(
        DOUBLE_CONFIG.replace("dynamic_batching { max_queue_delay_microseconds: 20000 }", "sequence_batching { }")
    )
    settings = served_settings_from_model_config(config)
    assert settings.text() == "max batch 8, 1 instance, batched by its sequence batcher"
    assert settings.differences(ServedSettings(8, 1, True, (8,), 100)) == []
