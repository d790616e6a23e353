import pytest

from tritongen.config_paths import inside_model_folder, outside_path_problems
from tritongen.errors import TritongenError
from tritongen.validate import config_from_text
from tritongen.verify import check_verified, verify_repository

HAND_CONFIG = 'name: "hand"\nbackend: "python"\nmax_batch_size: 0\n'


@pytest.mark.parametrize(
    "value, inside",
    [
        ("$$TRITON_MODEL_DIRECTORY/env.tar.gz", True),
        ("$$TRITON_MODEL_DIRECTORY/envs/py311.tar.gz", True),
        ("$$TRITON_MODEL_DIRECTORY/../other/env.tar.gz", False),
        ("$$TRITON_MODEL_DIRECTORY/", False),
        ("$$TRITON_MODEL_DIRECTORY", False),
        ("$$TRITON_MODEL_DIRECTORYX/env.tar.gz", False),
        ("/opt/envs/env.tar.gz", False),
        ("env.tar.gz", False),
        ("$$TRITON_MODEL_DIRECTORY/a\\..\\..\\b", False),
        ("$$TRITON_MODEL_DIRECTORY/env$(id).tar.gz", False),  # the stub sources the environment through a shell
        ("$$TRITON_MODEL_DIRECTORY/my env.tar.gz", False),
    ],
)
def test_an_environment_path_is_inside_the_model_folder_only_through_the_model_directory_variable(value, inside):
    assert inside_model_folder(value) is inside


@pytest.mark.parametrize(
    "setting, words",
    [
        (
            'parameters { key: "EXECUTION_ENV_PATH" value { string_value: "/tmp/outside-env.tar.gz" } }',
            "Python environment outside its folder",
        ),
        ('model_operations { op_library_filename: "/opt/libcustom.so" }', "operation library '/opt/libcustom.so'"),
        # the backend joins the model file's name to the version folder: ../ (or an absolute path) loads any file
        ('default_model_filename: "../../../../tmp/evil.py"', "default_model_filename '../../../../tmp/evil.py'"),
        ('default_model_filename: "/tmp/evil.py"', "default_model_filename '/tmp/evil.py', a path out of"),
        ('cc_model_filenames { key: "8.0" value: "../x.plan" }', "cc_model_filenames '8.0' '../x.plan'"),
        (
            'optimization { execution_accelerators { gpu_execution_accelerator { name: "tensorrt" '
            'parameters { key: "trt_extra_plugin_lib_paths" value: "/tmp/plugin.so" } } } }',
            "trt_extra_plugin_lib_paths '/tmp/plugin.so'",
        ),
        (
            'optimization { execution_accelerators { gpu_execution_accelerator { name: "tensorrt" '
            'parameters { key: "trt_engine_cache_enable" value: "true" } } } }',
            "cached engines from the server's working folder",
        ),
        # Triton looks a backend up as <backends>/<name>/: this loaded a library from /tmp into the server, with
        # validate, sign, verify and serve --public-key passing (the library can be swapped after signing)
        ('backend: "../../../../tmp/bt/L"', "names backend '../../../../tmp/bt/L'"),
        ('backend: "/tmp/bt/L"', "names backend '/tmp/bt/L'"),
        ('runtime: "../../tmp/libx.so"', "names runtime '../../tmp/libx.so', a path"),
        ('model_repository_agents { agents [ { name: "../../tmp/a" } ] }', "repository agent '../../tmp/a'"),
        # Triton reads <model>/initial_state/<data_file> as every sequence's starting state, unchecked
        (
            'sequence_batching { state [ { input_name: "h" output_name: "h_next" data_type: TYPE_FP32 dims: [4] '
            'initial_state [ { name: "s" data_type: TYPE_FP32 dims: [4] data_file: "../../../tmp/state.bin" } ] '
            "} ] }",
            "initial state of 'h' from data_file '../../../tmp/state.bin', a path out of its initial_state folder",
        ),
        # Triton reads <model>/warmup/<input_data_file> into a warm-up request, and a label file from the model folder
        (
            'model_warmup [{ name: "w" batch_size: 1 inputs { key: "x" value { data_type: TYPE_FP32 dims: [1] '
            'input_data_file: "../../../../etc/hostname" } } }]',
            "warms 'x' up with input_data_file '../../../../etc/hostname', a path out of its warmup folder",
        ),
        (
            'output [{ name: "z" data_type: TYPE_FP32 dims: [1] label_filename: "../../../etc/passwd" }]',
            "labels of output 'z' from '../../../etc/passwd', a path out of its folder",
        ),
        (
            'output [{ name: "z" data_type: TYPE_FP32 dims: [1] label_filename: "/etc/passwd" }]',
            "labels of output 'z' from '/etc/passwd'",
        ),
        # a backend's own settings naming files elsewhere: OpenVINO loads CPU_EXTENSION_PATH as a library, TensorRT-LLM
        # reads its engine and tokenizer from gpt_model_path and tokenizer_dir (an attacker's finding: verify passed)
        (
            'parameters { key: "CPU_EXTENSION_PATH" value { string_value: "/tmp/libevil.so" } }',
            "sets parameter CPU_EXTENSION_PATH to '/tmp/libevil.so', a path out of its folder",
        ),
        (
            'parameters { key: "gpt_model_path" value { string_value: "../../other/engines" } }',
            "sets parameter gpt_model_path to '../../other/engines'",
        ),
        (
            'parameters { key: "tokenizer_dir" value { string_value: "~/tokenizers/x" } }',
            "sets parameter tokenizer_dir to '~/tokenizers/x'",
        ),
        # no file has a NUL in its name: validate's own check of the warm-up file ended in a traceback on it
        (
            'model_warmup [{ name: "w" batch_size: 1 inputs { key: "x" value { data_type: TYPE_FP32 dims: [1] '
            'input_data_file: "x\\000y" } } }]',
            "warms 'x' up with input_data_file 'x\x00y'",
        ),
    ],
)
def test_settings_that_point_triton_outside_the_model_folder_are_named(setting, words):
    base = HAND_CONFIG.replace('backend: "python"\n', "") if setting.startswith("backend:") else HAND_CONFIG
    problems = outside_path_problems(config_from_text(base + setting), "hand")
    assert len(problems) == 1 and words in problems[0], problems


def test_settings_inside_the_model_folder_or_without_files_pass():
    inside = 'parameters { key: "EXECUTION_ENV_PATH" value { string_value: "$$TRITON_MODEL_DIRECTORY/env.tar.gz" } }'
    cache_off = (
        'optimization { execution_accelerators { gpu_execution_accelerator { name: "tensorrt" '
        'parameters { key: "trt_engine_cache_enable" value: "false" } '
        'parameters { key: "precision_mode" value: "FP16" } } } }'
    )
    own_file = 'default_model_filename: "sub/model.py"\n'
    own_state = (
        'sequence_batching { state [ { input_name: "h" output_name: "h_next" data_type: TYPE_FP32 dims: [4] '
        'initial_state [ { name: "s" data_type: TYPE_FP32 dims: [4] data_file: "h0.bin" } ] } ] }'
    )
    own_warmup = (
        'model_warmup [{ name: "w" batch_size: 1 inputs { key: "x" value { data_type: TYPE_FP32 dims: [1] '
        'input_data_file: "x.bin" } } }]\n'
        'output [{ name: "z" data_type: TYPE_FP32 dims: [1] label_filename: "labels.txt" }]'
    )
    own_params = (
        'parameters { key: "model_file" value { string_value: "weights/model.bin" } }\n'
        'parameters { key: "tokenizer_dir" value { string_value: "$$TRITON_MODEL_DIRECTORY/tokenizer" } }\n'
        'parameters { key: "separator" value { string_value: "/" } }\n'  # no path key: not read as a path
        # a reviewer's false positives of the first version: TensorRT-LLM's stock worker in the image, values that
        # are no paths, a path inside the model folder with a space, keys that only hold "file" or "lib" in a word
        'parameters { key: "executor_worker_path" value { string_value: '
        '"/opt/tritonserver/backends/tensorrtllm/trtllmExecutorWorker" } }\n'
        'parameters { key: "model_devices" value { string_value: "0:1" } }\n'
        'parameters { key: "calibration_mode" value { string_value: "D:quick" } }\n'
        'parameters { key: "engine_dir" value { string_value: "$$TRITON_MODEL_DIRECTORY/engines (v2)" } }\n'
        'parameters { key: "profile" value { string_value: "~fast" } }\n'
    )
    config = config_from_text(HAND_CONFIG + inside + cache_off + own_file + own_state + own_warmup + own_params)
    assert outside_path_problems(config, "hand") == []
    for plain in (
        'backend: "my_backend-2"',
        'runtime: "model.py"',
        'model_repository_agents { agents [ { name: "checksum" } ] }',
    ):
        assert outside_path_problems(config_from_text(HAND_CONFIG.replace('backend: "python"', "") + plain), "h") == []


def test_verify_refuses_a_hand_written_model_whose_environment_lies_outside_the_repository(tmp_path):
    """A signature covers the config, not the archive it names: verify (which serve and sign run) refuses the path,
    even for a model allowed unverified, and accepts the archive inside the model folder."""
    repo = tmp_path / "repo"
    model = repo / "hand"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    outside = 'parameters { key: "EXECUTION_ENV_PATH" value { string_value: "/tmp/outside-env.tar.gz" } }\n'
    (model / "config.pbtxt").write_text(HAND_CONFIG + outside)
    with pytest.raises(TritongenError, match="model 'hand' names a Python environment outside its folder"):
        check_verified(repo, allow_unverified=["hand"])
    (model / "config.pbtxt").write_text(HAND_CONFIG + outside.replace("/tmp/", "$$TRITON_MODEL_DIRECTORY/"))
    report = verify_repository(repo, allow_unverified=["hand"])
    assert report.ok, report.problems


@pytest.mark.parametrize(
    "tail, words",
    [
        (b"# \xff\n", "cannot be checked for settings that read files outside its folder"),
        (b"optimization { priority: 7 }\n", "cannot be checked for settings"),
    ],
)
def test_a_config_tritongen_cannot_read_fails_verify_rather_than_skipping_its_path_checks(tmp_path, tail, words):
    """Triton reads a config with a non-UTF-8 byte in a comment, or an enum number without a name: verify, sign and
    serve --public-key passed such a config unchecked (its outside paths too), as they could not parse it."""
    repo = tmp_path / "repo"
    model = repo / "hand"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    outside = b'parameters { key: "EXECUTION_ENV_PATH" value { string_value: "/tmp/env.tar.gz" } }\n'
    (model / "config.pbtxt").write_bytes(HAND_CONFIG.encode() + tail + outside)
    with pytest.raises(TritongenError, match=words):
        check_verified(repo, allow_unverified=["hand"])
    (model / "config.pbtxt").write_bytes(HAND_CONFIG.encode())
    assert verify_repository(repo, allow_unverified=["hand"]).ok


def test_a_hand_written_model_whose_config_or_version_folder_links_elsewhere_fails_verify(tmp_path):
    """Found by an attacker: verify skipped a config.pbtxt that is a link (its outside paths unchecked: serve
    --docker then printed its docker run), and did not look at a version folder of an unverified model that links
    out of the repository (where a stale bytecode cache hid)."""
    repo = tmp_path / "repo"
    model = repo / "hand"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    (model / "real.pbtxt").write_text(
        HAND_CONFIG + 'parameters { key: "EXECUTION_ENV_PATH" value { string_value: "/tmp/evil_env.tar.gz" } }\n'
    )
    (model / "config.pbtxt").symlink_to("real.pbtxt")
    with pytest.raises(TritongenError, match="the config of model 'hand' is a symbolic link"):
        check_verified(repo, allow_unverified=["hand"])
    (model / "config.pbtxt").unlink()
    (model / "config.pbtxt").write_text(HAND_CONFIG)
    assert verify_repository(repo, allow_unverified=["hand"]).ok
    outside = tmp_path / "v2"
    outside.mkdir()
    (outside / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    (model / "2").symlink_to(outside)
    with pytest.raises(TritongenError, match="version folder 'hand/2' is a symbolic link"):
        check_verified(repo, allow_unverified=["hand"])
