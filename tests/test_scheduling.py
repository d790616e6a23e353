"""The rest of Triton's scheduling (issue 16, item 7): priority levels, queue policies and the rate limiter, from
flags or the YAML spec, through the template, parsed back with Triton's protobuf, checked with Triton's rules, and
loaded by the real server."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DOUBLE_MODEL, sleepy_model, write_model
from tritongen.cli import main
from tritongen.config import config_text_from_spec
from tritongen.errors import TritongenError
from tritongen.spec import TensorSpec, build_spec_from_options
from tritongen.validate import config_from_text, problems_in_config

FLAGS = {
    "priority_levels": 3,
    "default_priority": 2,
    "queue_policies": ["timeout_us=5000,action=delay,allow_override=true,max_size=64", "1:timeout_us=800,max_size=4"],
    "rate_limiter": ["R1:2", "R2:1:global"],
    "rate_limiter_priority": 2,
}
SPEC_YAML = """\
name: double
max_batch_size: 8
inputs: [{name: X, dtype: FP32, dims: [4]}]
priority_levels: 3
default_priority: 2
queue_policies:
  - {timeout_us: 5000, action: delay, allow_override: true, max_size: 64}
  - {priority: 1, timeout_us: 800, max_size: 4}
rate_limiter:
  - {name: R1, count: 2}
  - {name: R2, count: 1, global: true}
rate_limiter_priority: 2
"""


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "model.pt"
    path.write_bytes(b"not read: only the spec is made")
    return path


def config_for(spec):
    return config_from_text(config_text_from_spec(spec.with_outputs([TensorSpec("Y", "FP32", (4,))]), None))


def spec_from_flags(model_file, **flags):
    return build_spec_from_options(model_file, name="double", inputs=["X:FP32:4"], **flags)


def test_flags_reach_the_config_as_triton_reads_it(model_file):
    config = config_for(spec_from_flags(model_file, **FLAGS))
    from tritonclient.grpc import model_config_pb2 as mc

    db = config.dynamic_batching
    assert (db.priority_levels, db.default_priority_level) == (3, 2)
    default = db.default_queue_policy
    assert default.timeout_action == mc.ModelQueuePolicy.DELAY and default.default_timeout_microseconds == 5000
    assert default.allow_timeout_override and default.max_queue_size == 64
    assert set(db.priority_queue_policy) == {1}
    first = db.priority_queue_policy[1]
    assert first.timeout_action == mc.ModelQueuePolicy.REJECT and first.default_timeout_microseconds == 800
    assert not first.allow_timeout_override and first.max_queue_size == 4
    (group,) = config.instance_group
    limiter = group.rate_limiter
    assert [(r.name, r.count, getattr(r, "global")) for r in limiter.resources] == [("R1", 2, False), ("R2", 1, True)]
    assert limiter.priority == 2
    assert problems_in_config(config) == []


def test_yaml_spec_gives_the_same_config_as_the_flags(model_file, tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC_YAML)
    from_yaml = build_spec_from_options(model_file, spec_file=tmp_path / "spec.yaml")
    assert config_for(from_yaml) == config_for(spec_from_flags(model_file, **FLAGS))
    assert from_yaml.to_dict()["queue_policies"][1] == {
        "priority": 1,
        "timeout_us": 800,
        "action": "REJECT",
        "allow_override": False,
        "max_size": 4,
    }


def test_defaults_write_nothing_new_and_the_default_level_is_the_lowest(model_file):
    plain = config_text_from_spec(spec_from_flags(model_file).with_outputs([TensorSpec("Y", "FP32", (4,))]), None)
    assert "priority" not in plain and "queue_policy" not in plain and "rate_limiter" not in plain
    config = config_for(spec_from_flags(model_file, priority_levels=4))
    assert (config.dynamic_batching.priority_levels, config.dynamic_batching.default_priority_level) == (4, 4)


@pytest.mark.parametrize(
    "flags, words",
    [
        ({"queue_policies": ["2:timeout_us=10"]}, "no priority levels"),
        ({"priority_levels": 2, "queue_policies": ["3:timeout_us=10"]}, "beyond the 2 levels"),
        ({"priority_levels": 2, "default_priority": 3}, "outside the priority levels [1, 2]"),
        ({"default_priority": 1}, "without --priority-levels"),
        ({"queue_policies": ["timeout_us=1", "max_size=2"]}, "two queue policies for the default queue"),
        ({"queue_policies": ["timeout_us=1,action=drop"]}, "is not reject or delay"),
        ({"queue_policies": ["timeout_us=-1"]}, "is not an integer from 0"),
        ({"queue_policies": ["timeout_us=1,colour=red"]}, "unknown key 'colour'"),
        ({"queue_policies": ["timeout=1"]}, "unknown key 'timeout': did you mean 'timeout_us'? use timeout_us, action"),
        ({"queue_policies": ["0:timeout_us=1"]}, "level 0 is not a priority level"),
        ({"queue_policies": ["timeout_us"]}, "is not key=value"),
        ({"max_batch_size": 0, "priority_levels": 2}, "--max-batch-size 0 turns off"),
        ({"rate_limiter": ["R1:2", "R1:3:global"]}, "'R1' is listed twice"),
        ({"rate_limiter": ["R1"]}, "is not RESOURCE:COUNT[:global]"),
        ({"rate_limiter": ["R1:2:local"]}, "is not RESOURCE:COUNT[:global]"),
        ({"rate_limiter": ["R/1:2"]}, "is not a plain name"),
        ({"rate_limiter": ["R1:many"]}, "'many' is not an integer"),
        ({"rate_limiter_priority": -1}, "--rate-limiter-priority"),
    ],
)
def test_bad_scheduling_is_one_clean_error(model_file, flags, words):
    with pytest.raises(TritongenError) as err:
        spec_from_flags(model_file, **flags)
    assert words in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "entry, words",
    [
        ("queue_policies: [{timeout_us: 5, speed: 2}]", "queue_policies #1"),
        ("queue_policies: [{allow_override: 'yes'}]", "allow_override"),
        ("queue_policies: {timeout_us: 5}", "'queue_policies'"),
        ("rate_limiter: [{name: R1}]", "rate_limiter #1"),
        ("rate_limiter: [{name: R1, count: 1, global: 1}]", "global"),
        ("priority_levels: two", "priority_levels"),
    ],
)
def test_bad_yaml_scheduling_is_one_clean_error(model_file, tmp_path, entry, words):
    (tmp_path / "spec.yaml").write_text("inputs: [{name: X, dtype: FP32, dims: [4]}]\n" + entry + "\n")
    with pytest.raises(TritongenError) as err:
        build_spec_from_options(model_file, spec_file=tmp_path / "spec.yaml")
    assert words in str(err.value), str(err.value)


def test_cli_bad_scheduling_one_error_line_nothing_written(model_file, tmp_path, capsys):
    repo = tmp_path / "repo"
    with pytest.raises(SystemExit) as exit_:
        main(["build", str(model_file), "--input", "X:FP32:4", "--repo", str(repo), "--queue-policy", "2:timeout_us=1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "no priority levels" in err and not repo.exists()


# ------------------------------------------------------------------------------------------ Triton's rules


def _with(text: str, dynamic: str = "", group: str = "") -> str:
    return (
        'name: "m"\nbackend: "python"\nmax_batch_size: 8\n'
        'input [{ name: "X" data_type: TYPE_FP32 dims: [ 4 ] }]\n'
        'output [{ name: "Y" data_type: TYPE_FP32 dims: [ 4 ] }]\n'
        f"dynamic_batching {{ {dynamic} }}\ninstance_group [{{ kind: KIND_CPU count: 1 {group} }}, "
        f"{{ kind: KIND_CPU count: 1 {text} }}]\n"
    )


@pytest.mark.parametrize(
    "dynamic, words",
    [
        ("priority_levels: 2 default_priority_level: 3", "default priority level must be in range [1, 2] for m"),
        ("priority_levels: 2", "default priority level must be in range [1, 2] for m"),
        (
            "priority_levels: 2 default_priority_level: 1 priority_queue_policy { key: 5 value { max_queue_size: 1 } }",
            "priority queue policy must have priority level in range [1, 2] for m",
        ),
        (
            "preserve_ordering: true default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 5 }",
            "Queue policy can not have DELAY as timeout action when 'preserve_ordering' is true for m",
        ),
    ],
)
def test_validator_applies_tritons_dynamic_batching_rules(dynamic, words):
    assert words in problems_in_config(config_from_text(_with("", dynamic))), problems_in_config(
        config_from_text(_with("", dynamic))
    )


def test_validator_refuses_a_resource_both_global_and_per_device():
    per_device = 'rate_limiter { resources [{ name: "R1" count: 1 }] }'
    shared = 'rate_limiter { resources [{ name: "R1" global: true count: 1 }] priority: 2 }'
    problems = problems_in_config(config_from_text(_with(shared, group=per_device)))
    assert 'Resource "R1" is present as both global and device-specific resource in the model configuration.' in (
        problems
    )
    assert problems_in_config(config_from_text(_with(per_device, group=per_device))) == []


# ------------------------------------------------------------------------------------------ the real server


@pytest.mark.server
def test_config_with_priorities_queue_policies_and_a_rate_limiter_loads_and_serves(
    model_file, tmp_path, server_install
):
    import tritonclient.grpc as grpcclient

    from tritongen.server import ServeSpec, server_from_repository

    # Priority 1's queue timeout (REJECT) set far above any wait: at 800 us a loaded machine's queue wait was
    # refused once ("Request timeout expired"); what this test proves is that the policy loads and requests of each
    # level are served, not this machine's queueing time.
    flags = {**FLAGS, "queue_policies": [FLAGS["queue_policies"][0], "1:timeout_us=30000000,max_size=4"]}
    spec = spec_from_flags(model_file, **flags).with_outputs([TensorSpec("Y", "FP32", (4,))])
    repo = tmp_path / "repo"
    write_model(repo, "double", config_text_from_spec(spec, None), DOUBLE_MODEL)
    # a queue of one: while one request runs (3 s) and one waits, more are refused at once
    bounded = build_spec_from_options(
        model_file, name="sleepy", inputs=["X:FP32:4"], max_batch_size=1, queue_policies=["max_size=1"]
    ).with_outputs([TensorSpec("Y", "FP32", (4,))])
    write_model(repo, "sleepy", config_text_from_spec(bounded, None), sleepy_model(3.0))
    serve = ServeSpec(
        repo=repo,
        extra_args=("--rate-limit=execution_count", "--rate-limit-resource=R1:4", "--rate-limit-resource=R2:2"),
    )
    with server_from_repository(serve) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        loaded = client.get_model_config("double").config
        assert loaded.dynamic_batching.priority_levels == 3 and loaded.dynamic_batching.default_priority_level == 2
        assert loaded.dynamic_batching.priority_queue_policy[1].max_queue_size == 4
        assert [r.name for r in loaded.instance_group[0].rate_limiter.resources] == ["R1", "R2"]
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        for priority in (0, 1, 3):  # the default level, the highest, the lowest
            tensor = grpcclient.InferInput("X", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            answer = client.infer("double", [tensor], priority=priority, timeout=60_000_000)
            np.testing.assert_array_equal(answer.as_numpy("Y"), x * 2 + 1)
        outcomes: list[str] = []
        done = threading.Event()

        def record(result, error) -> None:
            outcomes.append("ok" if error is None else str(error))
            if len(outcomes) == 4:
                done.set()

        one = grpcclient.InferInput("X", [1, 4], "FP32")
        one.set_data_from_numpy(x[:1])
        for _ in range(4):
            client.async_infer("sleepy", [one], record)
        assert done.wait(60), outcomes
        refused = [o for o in outcomes if "Exceeds maximum queue size" in o]
        # one runs, at most one waits (whether the first had left the queue when the second came is the server's
        # timing): every other request is refused, none waits
        assert outcomes.count("ok") in (1, 2) and len(refused) == 4 - outcomes.count("ok"), outcomes
        client.close()
