"""Data-parallel runs on the frameworks' launchers: 2 processes compute the steps of 1.

Each test runs the tiny pipeline (teacher fine-tuning, GD, TD1, TD2, evaluation) with dropout off
in one process and in two (`distill-engine run --nproc 2`, and raw `torchrun`), with the same
global batches, and compares every phase's final weights: equal within float32 rounding (the
all-reduce sums the ranks' gradients in another order than one process's backward). TD1 reads 61
examples, so its last batch of 5 rows is split 3/2 (the loss weights). Two nodes started on their
own on this machine (two torchruns with --nnodes 2; MindSpore's scheduler and one worker per node
from msrun's environment variables) match it the same way. Then: one run directory,
one metrics.jsonl, rank 0's records only; a rank killed mid-phase stops the job within 60 s with a
message naming the rank; a 2-process run stopped by SIGTERM resumes in 1 process.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from distill_engine.testing.fixtures import write_tiny_recipe

HERE = Path(__file__).resolve().parent
PHASES = ("teacher", "gd", "td1", "td2")
BIN = Path(sys.executable).parent
# dropout off (the ranks draw other masks than one process), a partial last TD1 batch
COMMON = ["--set", "teacher.dropout=0", "--set", "teacher.attention_dropout=0", "--set", "phases.td1.max_examples=61",
          "--set", "phases.td2.epochs=1", "--no-progress"]
# float32: the gradient mean over 2 ranks rounds differently from one backward over the batch
ATOL, RTOL = 2e-5, 1e-4


def _installed(name: str) -> bool:
    from distill_engine.plugins import backend_registry

    return name in backend_registry()


def _env(**extra) -> dict:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1", **extra}
    return env


def _engine(*args, timeout=900, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "distill-engine"), *map(str, args)], env=_env(), capture_output=True, text=True,
                          timeout=timeout, **kw)


def _weights(run: Path) -> dict:
    return {phase: load_file(str(run / phase / "final" / "model.safetensors")) for phase in PHASES}


def _largest_difference(a: Path, b: Path) -> float:
    wa, wb = _weights(a), _weights(b)
    worst = 0.0
    for phase in PHASES:
        assert set(wa[phase]) == set(wb[phase])
        for name, value in wa[phase].items():
            np.testing.assert_allclose(wb[phase][name], value, rtol=RTOL, atol=ATOL, err_msg=f"{phase}: {name}")
            worst = max(worst, float(np.max(np.abs(wb[phase][name] - value))))
    return worst


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _check_one_run_directory(single: Path, parallel: Path, processes: int) -> None:
    def listing(run):
        return sorted(str(p.relative_to(run)) for p in run.rglob("*")
                      if "state" not in p.parts and "launcher-logs" not in p.parts)

    assert listing(parallel) == listing(single)  # the same files, written once
    records = _records(parallel)
    start = records[0]
    assert start["event"] == "start" and start["processes"] == processes
    single_steps = [(r["event"], r["phase"], r["step"]) for r in _records(single) if r["event"] in ("train", "eval")]
    steps = [(r["event"], r["phase"], r["step"]) for r in records if r["event"] in ("train", "eval")]
    assert steps == single_steps  # one record per global step: rank 0's
    # the logged losses are the global batch's (the ranks' shares weighted by rows)
    one = {(r["phase"], r["step"]): r["total"] for r in _records(single) if r["event"] == "train"}
    many = {(r["phase"], r["step"]): r["total"] for r in records if r["event"] == "train"}
    for key, value in one.items():
        assert many[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    summary = json.loads((parallel / "summary.json").read_text())
    assert [p["phase"] for p in summary] == [p["phase"] for p in json.loads((single / "summary.json").read_text())]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp")
    return root, write_tiny_recipe(root)


def _single(tiny, backend: str) -> Path:
    root, recipe = tiny
    out = root / f"single-{backend}"
    if not (out / "summary.json").exists():
        done = _engine("run", recipe, "--backend", backend, "--output-dir", out, *COMMON)
        assert done.returncode == 0, done.stderr
    return out


@pytest.mark.skipif(not _installed("torch"), reason="backend torch not installed")
def test_torch_two_processes_with_nproc_and_with_torchrun_match_one(tiny):
    root, recipe = tiny
    single = _single(tiny, "torch")
    nproc = root / "nproc-torch"
    done = _engine("run", recipe, "--backend", "torch", "--output-dir", nproc, "--nproc", 2, *COMMON)
    assert done.returncode == 0, done.stderr
    assert "torch.distributed.run" in done.stderr and "--nproc_per_node=2" in done.stderr
    assert done.stdout.count("run written to") == 1  # rank 0 alone prints
    worst = _largest_difference(single, nproc)
    _check_one_run_directory(single, nproc, 2)

    raw = root / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(BIN / "distill-engine"), "run", str(recipe), "--backend", "torch", "--output-dir", str(raw), *COMMON]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    worst = max(worst, _largest_difference(single, raw))
    _check_one_run_directory(single, raw, 2)
    print(f"largest |w_2 - w_1| over every phase's final weights (torch): {worst:.3g}")


@pytest.mark.skipif(not _installed("mindspore"), reason="backend mindspore not installed")
def test_mindspore_two_processes_with_msrun_match_one(tiny):
    root, recipe = tiny
    single = _single(tiny, "mindspore")
    out = root / "nproc-mindspore"
    done = _engine("run", recipe, "--backend", "mindspore", "--output-dir", out, "--nproc", 2, *COMMON)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "msrun" in done.stderr and "--worker_num=2" in done.stderr
    worst = _largest_difference(single, out)
    _check_one_run_directory(single, out, 2)
    assert (out / "launcher-logs").is_dir()  # msrun's worker logs stay inside the run directory
    print(f"largest |w_2 - w_1| over every phase's final weights (mindspore): {worst:.3g}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nodes(commands: list[tuple[list[str], dict]], logs: Path, timeout: float = 900) -> list[tuple[int, str]]:
    """Start each node's command on its own (its own process and environment, as on its own machine),
    each writing to its own log in `logs` (a pipe nobody reads while another node is awaited would
    fill and block it), wait for all; (exit code, log) per node. A node that fails stops the others:
    they would otherwise wait for it until their rendezvous times out."""
    logs.mkdir(parents=True, exist_ok=True)
    files = [open(logs / f"node-process-{i}.log", "w") for i in range(len(commands))]
    procs = [subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT) for (cmd, env), f in zip(commands, files)]
    deadline = time.time() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(deadline - time.time(), 1))
            if proc.returncode != 0:
                break
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for f in files:
            f.close()
    return [(proc.returncode, (logs / f"node-process-{i}.log").read_text(errors="replace"))
            for i, proc in enumerate(procs)]


@pytest.mark.skipif(not _installed("torch"), reason="backend torch not installed")
def test_torch_two_nodes_each_started_on_its_own_match_one(tiny):
    """`torchrun --nnodes 2 --node-rank 0|1 --nproc-per-node 1` started twice, node 0's address the
    static rendezvous (127.0.0.1 here, HOST0 on two machines): the multi-node path on one machine."""
    root, recipe = tiny
    single = _single(tiny, "torch")
    out, port = root / "two-nodes-torch", _free_port()
    nodes = [([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank),
               "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
               str(BIN / "distill-engine"), "run", str(recipe), "--backend", "torch", "--output-dir", str(out), *COMMON],
              _env()) for rank in (0, 1)]
    for code, output in _nodes(nodes, root / f"{out.name}-logs"):
        assert code == 0, output[-4000:]
    worst = _largest_difference(single, out)
    _check_one_run_directory(single, out, 2)
    print(f"largest |w_2 - w_1| over every phase's final weights (torch, 2 nodes): {worst:.3g}")


@pytest.mark.skipif(not _installed("mindspore"), reason="backend mindspore not installed")
def test_mindspore_two_nodes_each_started_on_its_own_match_one(tiny):
    """MindSpore's cluster environment, as msrun sets it on each node (two msruns on one machine
    would each start a scheduler on the same port): node 0 runs the scheduler (MS_ROLE=MS_SCHED)
    and worker 0, node 1 worker 1; each worker is told the scheduler's address, the worker count
    and its node id."""
    root, recipe = tiny
    single = _single(tiny, "mindspore")
    out, port = root / "two-nodes-mindspore", _free_port()
    cluster = {"MS_SCHED_HOST": "127.0.0.1", "MS_SCHED_PORT": str(port), "MS_WORKER_NUM": "2", "RANK_SIZE": "2",
               "MS_TOPO_TIMEOUT": "120"}
    cmd = [str(BIN / "distill-engine"), "run", str(recipe), "--backend", "mindspore", "--output-dir", str(out), *COMMON]
    nodes = [(cmd, _env(**cluster, MS_ROLE="MS_SCHED", RANK_ID="0"))]
    nodes += [(cmd, _env(**cluster, MS_ROLE="MS_WORKER", MS_NODE_ID=str(rank), RANK_ID=str(rank), DEVICE_ID="0"))
              for rank in (0, 1)]
    for code, output in _nodes(nodes, root / f"{out.name}-logs"):
        assert code == 0, output[-4000:]
    worst = _largest_difference(single, out)
    _check_one_run_directory(single, out, 2)
    print(f"largest |w_2 - w_1| over every phase's final weights (mindspore, 2 nodes): {worst:.3g}")


def _rank_pid(out: Path, rank: int) -> int | None:
    """The pid of the worker of `rank` writing to `out` (torchrun: RANK; msrun: RANK_ID)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = dict(item.split("=", 1) for item in (proc / "environ").read_bytes().decode().split("\0") if "=" in item)
            cmdline = (proc / "cmdline").read_bytes().decode()
        except (OSError, ValueError):
            continue
        if str(out) not in cmdline:
            continue
        if env.get("RANK") == str(rank) and "TORCHELASTIC_RUN_ID" in env:
            return int(proc.name)
        if env.get("RANK_ID") == str(rank) and env.get("MS_ROLE") == "MS_WORKER":
            return int(proc.name)
    return None


def _kill_rank_1_mid_phase(recipe: Path, backend: str, out: Path) -> tuple[int, str, float]:
    """`run --nproc 2` with a long teacher phase; SIGKILL rank 1 once teacher step 3 is logged.
    Returns (exit code, output, seconds from the kill to the job's exit)."""
    cmd = [str(BIN / "distill-engine"), "run", str(recipe), "--backend", backend, "--output-dir", str(out),
           "--nproc", "2", "--set", "phases.teacher.epochs=50", *COMMON]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = out / "metrics.jsonl"
    killed = None
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None and killed is None:
        if log.exists() and any(r.get("event") == "train" and r.get("step", 0) >= 3 for r in _read(log)):
            pid = _rank_pid(out, 1)
            assert pid is not None, "no process of rank 1 found"
            os.kill(pid, signal.SIGKILL)
            killed = time.time()
        time.sleep(0.1)
    try:
        output, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        pytest.fail(f"the job did not stop after rank 1 was killed:\n{output[-4000:]}")
    assert killed is not None, f"the run never reached teacher step 3:\n{output[-4000:]}"
    return proc.returncode, output, time.time() - killed


@pytest.mark.skipif(not _installed("torch"), reason="backend torch not installed")
def test_torch_a_killed_rank_stops_the_job_naming_the_rank(tiny):
    root, recipe = tiny
    code, output, seconds = _kill_rank_1_mid_phase(recipe, "torch", root / "killed-torch")
    assert code != 0
    assert seconds < 60, f"{seconds:.1f} s from the kill to the job's exit"
    assert "rank      : 1" in output or "rank: 1" in output, output[-4000:]  # torchrun's failure summary
    print(f"torch: rank 1 killed; the job exited {code} after {seconds:.1f} s")


@pytest.mark.skipif(not _installed("mindspore"), reason="backend mindspore not installed")
def test_mindspore_a_killed_rank_stops_the_job_naming_the_rank(tiny):
    root, recipe = tiny
    code, output, seconds = _kill_rank_1_mid_phase(recipe, "mindspore", root / "killed-mindspore")
    assert code != 0
    assert seconds < 60, f"{seconds:.1f} s from the kill to the job's exit"
    assert "error: rank 1 (pid" in output and "exited first, with signal 9" in output, output[-4000:]
    print(f"mindspore: rank 1 killed; the job exited {code} after {seconds:.1f} s:",
          next(line for line in output.splitlines() if line.startswith("error: rank 1")))


@pytest.mark.skipif(not _installed("torch"), reason="backend torch not installed")
def test_torch_two_process_run_stopped_by_sigterm_resumes_in_one_process(tiny):
    """SIGTERM to the launcher mid-phase: every rank stops at the same step, rank 0 writes the
    state; the run then resumes with one process and ends where the 1-process run ended."""
    root, recipe = tiny
    single = _single(tiny, "torch")
    out = root / "resume-torch"
    cmd = [str(BIN / "distill-engine"), "run", str(recipe), "--backend", "torch", "--output-dir", str(out),
           "--nproc", "2", *COMMON]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and any(r.get("event") == "train" and r.get("phase") == "td1" for r in _read(log)):
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0, "the run finished before it could be stopped"
    assert "interrupted by SIGTERM in phase td1" in err, err[-3000:]
    assert "--resume --nproc 2" in err  # the resume hint keeps the process count
    done = _engine("run", recipe, "--backend", "torch", "--output-dir", out, "--resume", *COMMON)
    assert done.returncode == 0, done.stderr
    _largest_difference(single, out)
    assert [r["processes"] for r in _records(out) if r["event"] in ("start", "resume")] == [2, 1]


def _read(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out
