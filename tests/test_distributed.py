"""Several processes: a run over 2 processes (one CPU device each, collectives over gloo) is the
run of one process with 2 devices, writes its files once, and resumes across processes.

``python -m hebbjax.run distributed.enabled=true distributed.coordinator_address=...
distributed.num_processes=2 distributed.process_id=i`` is what a user launches by hand (on SLURM
the three keys are detected); each test starts the processes as subprocesses on localhost.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SHORT = ["training.unsup_epochs=1", "training.readout_epochs=3", "logging.progress=false", "logging.plots=false",
         "checkpoint.every_minutes=0", "checkpoint.keep=1000", "training.steps_per_chunk=20"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                HEBBJAX_COMPILATION_CACHE="")


def _two_processes(run_dir: Path, *extra: str, second_dir: Path | None = None) -> list[str]:
    """Both processes' output; ``second_dir``: process 1's Hydra run directory (default ``run_dir``)."""
    port = _free_port()
    dirs = [run_dir, second_dir or run_dir]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "hebbjax.run", *SHORT, f"hydra.run.dir={dirs[i]}", "distributed.enabled=true",
         f"distributed.coordinator_address=localhost:{port}", "distributed.num_processes=2", f"distributed.process_id={i}", *extra],
        env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-4000:]
        outputs.append(out)
    return outputs


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _losses(run_dir: Path) -> list[float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if r["event"] == "chunk" and "loss" in r]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("distributed")
    one = subprocess.run([sys.executable, "-m", "hebbjax.run", *SHORT, f"hydra.run.dir={base / 'one'}", "logging.plots=true"],
                         env=_env(2), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-4000:]
    outputs = _two_processes(base / "two", "logging.plots=true")
    return base, outputs


def test_two_processes_train_what_one_process_with_two_devices_trains(runs):
    base, outputs = runs
    one, two = _results(base / "one"), _results(base / "two")
    assert len(two["devices"]) == 2
    assert (two["test_accuracy"], two["train_accuracy"]) == (one["test_accuracy"], one["train_accuracy"])
    # the readout's loss, chunk by chunk: the same computation, not only the same final accuracy
    assert len(_losses(base / "two")) == len(_losses(base / "one")) >= 3
    assert max(abs(a - b) for a, b in zip(_losses(base / "one"), _losses(base / "two"))) < 1e-6
    n = 1347  # digits train rows: each process holds its half on its device
    assert f"process 0 holds rows 0-{n // 2 + n % 2} of {n}" in outputs[0]
    assert f"process 1 holds rows {n // 2 + n % 2}-{n} of {n}" in outputs[1]
    summaries = [out.strip().splitlines()[-1].split(" total=")[0] for out in outputs]  # both processes print it
    assert summaries[0] == summaries[1] == f"default seed=0: test_accuracy={one['test_accuracy']:.4f} train_accuracy={one['train_accuracy']:.4f}"


def test_process_zero_alone_writes_the_results_and_metrics(runs):
    base, _ = runs
    lines = [json.loads(line) for line in (base / "two" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["event"] == "results" for r in lines) == 1
    assert sum(r["event"] == "phase" for r in lines) == 2  # one line per phase, not one per process
    assert not list((base / "two").glob("*.tmp"))


def test_process_zero_draws_the_pictures_of_the_run(runs):
    base, outputs = runs
    one, two = (sorted(p.name for p in (base / run / "plots").glob("*.png")) for run in ("one", "two"))
    assert two == one and len(one) >= 4  # filters, weight norms, receptive fields, accuracy, per phase
    assert all((base / "two" / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in two)
    assert not any("plots of phase" in out for out in outputs)  # no drawing failed on either process


def test_a_run_over_two_processes_resumes_from_a_checkpoint_in_the_middle(runs):
    base, _ = runs
    resumed = base / "resumed"
    shutil.copytree(base / "two", resumed)
    (resumed / "results.json").unlink()
    steps = sorted(int(p.name) for p in (resumed / "checkpoints").iterdir() if p.name.isdigit())
    middle = steps[len(steps) // 2]
    for step in steps:
        if step > middle:
            shutil.rmtree(resumed / "checkpoints" / str(step))
    _two_processes(resumed, f"resume={resumed}")
    result = _results(resumed)
    assert result["resumed_from"] is not None and 0 < result["resumed_from"]["step"]  # within a phase
    assert (result["test_accuracy"], result["train_accuracy"]) == (_results(base / "two")["test_accuracy"],
                                                                   _results(base / "two")["train_accuracy"])


@pytest.mark.parametrize("overrides, key", [
    (["distributed.process_id=1"], "distributed.enabled"),
    (["distributed.enabled=true", "distributed.num_processes=2", "distributed.process_id=2"], "distributed.process_id"),
    (["distributed.enabled=true", "distributed.coordinator_address=localhost"], "distributed.coordinator_address"),
    (["distributed.enabled=true", "distributed.num_processes=0"], "distributed.num_processes"),
])
def test_distributed_keys_are_checked_before_any_process_starts(overrides, key):
    from hebbjax.config import ConfigError, check
    from hebbjax.run import compose_config

    with pytest.raises(ConfigError, match=f"^{key}:"):
        check(compose_config(*overrides))


def test_a_streamed_split_trains_the_same_over_two_processes(tmp_path):
    """Streamed chunks (host batches put onto the global mesh by every process) as on one process."""
    stream = ["data.placement=stream"]
    one = subprocess.run([sys.executable, "-m", "hebbjax.run", *SHORT, *stream, f"hydra.run.dir={tmp_path / 'one'}"], env=_env(2),
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-4000:]
    # process 1's Hydra directory differs (its timestamp a second later): process 0's is the run's
    outputs = _two_processes(tmp_path / "two", *stream, second_dir=tmp_path / "two_later")
    assert not (tmp_path / "two_later" / "results.json").exists() and not (tmp_path / "two_later" / "checkpoints").exists()
    # each process reads its own half of every batch of 10, not the whole batch
    assert "process 0 reads rows 0-5 of every streamed batch of 10" in outputs[0]
    assert "process 1 reads rows 5-10 of every streamed batch of 10" in outputs[1]
    a, b = _results(tmp_path / "one"), _results(tmp_path / "two")
    assert a["streamed"] and b["streamed"]
    assert (b["test_accuracy"], b["train_accuracy"]) == (a["test_accuracy"], a["train_accuracy"])
    assert max(abs(x - y) for x, y in zip(_losses(tmp_path / "one"), _losses(tmp_path / "two"))) < 1e-6
