"""Bad values in the LLM services' config (src/llm/services/llm_common.c),
served by `dynamo serve`: a value present but of the wrong type or out of
range fails the service's start with a line naming the service, the key,
what it must be and the value given, the graph never comes up and `dynamo
serve` stops it, exiting non-zero; a bad threshold put on the control
plane while serving is refused the same way and the value in force stays.
test_llm_config.c checks the parsers themselves."""

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_disagg_graph import LONG, metric, start  # noqa: E402
from test_llm_graph import CONFIGS, GRAPHS, free_port  # noqa: E402
from conftest import Serve, env_for_tests  # noqa: E402

# graph, overrides, the lines its first try must log, the services that fail
CASES = [
    ("agg", ["--Worker.num-blocks=lots", "--Worker.speedup=fast", "--Worker.max-num-seqs=-5",
             "--Worker.block-size=0"],
     ["Worker: config key 'num-blocks' must be a whole number between 1 and 2147483647, "
      "not \"lots\"",
      "Worker: config key 'speedup' must be a number >= 0, not \"fast\"",
      "Worker: config key 'max-num-seqs' must be a whole number between 1 and 4294967295, "
      "not -5",
      "Worker: config key 'block-size' must be a whole number between 1 and 4294967295, not 0"],
     ["Worker"]),
    ("agg_router", ["--Router.overlap-weight=x"],
     ["Router: config key 'overlap-weight' must be a number >= 0, not \"x\""],
     ["Router"]),
    ("disagg", ["--Worker.max-local-prefill-length=-1", "--PrefillWorker.kv-chunk-bytes=100"],
     ["Worker: config key 'max-local-prefill-length' must be a whole number >= 0, not -1",
      "PrefillWorker: config key 'kv-chunk-bytes' must be a whole number between 4096 and "
      "8388608, not 100"],
     ["Worker", "PrefillWorker"]),
    ("agg", ["--Processor.route=fastest", "--Processor.max-tokens=2.5",
             "--Frontend.processor_wait_ms=soon", "--Worker.flash-attn=yes"],
     ["Processor: config key 'route' must be round-robin or random, not \"fastest\"",
      "Processor: config key 'max-tokens' must be a whole number >= 1, not 2.5",
      "Frontend: config key 'processor_wait_ms' must be a whole number between 0 and "
      "2147483647, not \"soon\"",
      "Worker: config key 'flash-attn' must be true or false, not \"yes\""],
     ["Processor", "Frontend", "Worker"]),
]


def test_a_bad_config_value_fails_the_start_naming_service_key_and_value():
    # All graphs at once: each stops only after its crash limit (5 exits).
    runs = []
    for graph, overrides, lines, failing in CASES:
        s = Serve([f"{GRAPHS}/{graph}.py:Frontend", "-f", f"{CONFIGS}/{graph}.yaml",
                   f"--Frontend.port={free_port()}", *overrides], env_for_tests())
        runs.append((s, overrides, lines, failing))
    try:
        for s, overrides, lines, failing in runs:
            try:
                rc = s.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{overrides}: dynamo serve kept running:\n{s.output()}")
            out = s.output()
            assert rc != 0, out
            assert "keeps crashing" in out, out
            for line in lines:
                assert line in out, f"{overrides}: no '{line}' in:\n{out}"
            for name in failing:
                assert f"error: {name}: on_start failed" in out, out
                assert f"] {name} ready" not in out, out  # never served
    finally:
        for s, *_ in runs:
            if s.proc.poll() is None:
                s.stop()


def test_a_bad_threshold_on_the_control_plane_is_refused_and_the_old_one_kept():
    s = start("disagg")
    puts, deleted = [], {}
    try:
        for key, value in [("max-local-prefill-length", "lots"),
                           ("max-prefill-queue-size", "-3"),
                           ("max-local-prefill-length", "99999999999999999999")]:
            put = subprocess.Popen([os.environ["CONTROL_PUT"], s.sock,
                                    f"config/dynamo/disagg/{key}", value, "30"],
                                   stdout=subprocess.PIPE)
            puts.append(put)
            assert put.stdout.readline() == b"put\n"
            keep = 256 if key == "max-local-prefill-length" else 8
            s.wait_for(f"Worker: control-plane key 'config/dynamo/disagg/{key}' must be a whole "
                       f"number >= 0, not \"{value}\"; keeping {keep}", timeout=10)
            put.kill()  # its session gone, the key is deleted: the config's value again
            put.wait()
            deleted[key] = deleted.get(key, 0) + 1
            s.wait_for(f"{key} is now {keep}", timeout=10, count=deleted[key])
        # 256 is still in force: a long prompt is prefilled remotely.
        s.client.completions.create(model="dynamo-sim", prompt=LONG, max_tokens=4)
        assert metric(s, "dynamo_disagg_remote_prefills_total", component="Worker") == 1
    finally:
        for put in puts:
            put.kill()
            put.wait()
        assert s.stop() == 0, s.output()
