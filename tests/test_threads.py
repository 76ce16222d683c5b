"""CPU threads for local runs (run/threads.py): the CPUs available, the busy ones, the
settings that win, and the closing line of a run far slower than its estimate."""

from __future__ import annotations

import pytest
import torch
from conftest import toy_spec_text

from remote_steer.run import estimate, threads
from remote_steer.run.runner import run_experiment
from remote_steer.run.spec import parse_spec


def _write(root, name, text):
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2, 1.5 CPUs
        ({"cpu.max": "max 100000\n"}, None),  # v2, no limit
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),  # v1
        ({"cpu,cpuacct/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 0.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1, no limit
        ({"cpu.max": "garbage"}, None),
        ({}, None),  # no cgroup files at all
    ],
)
def test_cgroup_quota_from_fake_files(tmp_path, files, expected):
    for name, text in files.items():
        _write(tmp_path, name, text)
    assert threads.cgroup_cpus(tmp_path, tmp_path / "no-proc") == expected


def test_available_cpus_is_the_affinity_capped_by_the_quota_rounded_up():
    four = {0, 1, 2, 3}
    assert threads.available_cpus(four) == 4
    assert threads.available_cpus(four, quota=1.5) == 2
    assert threads.available_cpus(four, quota=2.0) == 2
    assert threads.available_cpus(four, quota=0.5) == 1
    assert threads.available_cpus(four, quota=16.0) == 4
    assert threads.available_cpus({5}) == 1
    assert threads.available_cpus() >= 1  # this machine's own


def test_running_others_reads_the_running_field_less_this_process(tmp_path):
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("3.10 1.20 0.50 3/161 4242\n")
    assert threads.running_others(loadavg, samples=3) == 2
    loadavg.write_text("0.00 0.00 0.00 1/161 4242\n")
    assert threads.running_others(loadavg, samples=1) == 0
    assert threads.running_others(tmp_path / "absent") is None


def test_environment_wins_then_the_setting_then_the_free_cpus():
    omp = threads.choose(2, "threads setting", env={"OMP_NUM_THREADS": "3"}, cpus=2, running=0)
    assert (omp.threads, omp.source) == (3, "OMP_NUM_THREADS")
    assert omp.header() == "torch threads: 3 (OMP_NUM_THREADS=3; 2 CPUs available)"
    mkl = threads.choose(None, "threads setting", env={"MKL_NUM_THREADS": "1"}, cpus=4, running=0)
    assert (mkl.threads, mkl.source) == (1, "MKL_NUM_THREADS")
    bad = threads.choose(None, "threads setting", env={"OMP_NUM_THREADS": "lots"}, cpus=2, running=0)
    assert bad.source == "auto"  # an unreadable value is ignored, as torch would
    asked = threads.choose(4, "threads setting", env={}, cpus=2, running=1)
    assert asked.threads == 4 and asked.header() == "torch threads: 4 (threads setting; 2 CPUs available)"
    idle = threads.choose(None, "threads setting", env={}, cpus=2, load=0.3, running=0)
    assert idle.threads == 2
    assert idle.header() == "torch threads: 2 (2 CPUs available; set --threads or OMP_NUM_THREADS)"


@pytest.mark.parametrize(
    ("cpus", "load", "running", "expected"),
    [
        (2, 1.1, 1, 1),  # one busy process on two CPUs: one thread
        (2, 4.0, 5, 1),  # never fewer than one
        (8, 3.0, 3, 5),
        (2, 1.1, None, 1),  # no running count: the load average (a process running all along)
        (2, 0.5, None, 2),  # a process started seconds ago, or one that just ended: not busy
        (2, 0.8, None, 1),
        (2, 1.2, 0, 2),  # the running count is now; the load average lags behind it
        (2, None, None, 2),
    ],
)
def test_busy_cpus_are_left_to_their_processes(cpus, load, running, expected):
    choice = threads.choose(None, "threads setting", env={}, cpus=cpus, load=load, running=running)
    assert choice.threads == expected
    if expected < cpus:
        assert f"{cpus - expected} busy" in choice.header()


def test_slow_run_line_names_the_likely_cause():
    busy = threads.slow_note(98.0, 14.0, threads=2, cpus=2, load=3.1)
    assert (
        busy == "computing took 98 s, 7× the estimate of 14 s: the CPUs were busy (load 3.1 on 2 CPUs); try --threads 1"
    )
    one = threads.slow_note(98.0, 14.0, threads=1, cpus=2, load=3.1)
    assert one == "computing took 98 s, 7× the estimate of 14 s: the CPUs were busy (load 3.1 on 2 CPUs)"
    assert threads.slow_note(30.0, 14.0, threads=2, cpus=2, load=3.1) is None  # 2×: within the estimate's noise
    over = threads.slow_note(60.0, 10.0, threads=8, cpus=2, load=2.0)
    assert over == "computing took 60 s, 6× the estimate of 10 s: 8 threads on 2 CPUs; try --threads 2"
    quiet = threads.slow_note(60.0, 10.0, threads=2, cpus=2, load=2.1)  # its own two threads only
    assert quiet is not None and quiet.endswith("slower than the estimate's reference (2 idle cores)")
    assert threads.slow_note(60.0, 0.0, threads=2, cpus=2, load=2.1) is None


SMALL = toy_spec_text("threads", head='output_dir = "{out}"\nthreads = 1')


def test_a_run_says_its_threads_restores_them_and_says_why_it_was_slow(tmp_path, monkeypatch):
    from remote_steer.display import NullDisplay

    for var in threads.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(estimate, "CPU_GFLOPS", 1e12)  # an estimate no run can meet
    monkeypatch.setattr(estimate, "STEP_SECONDS", 1e-4)
    monkeypatch.setattr(threads, "load_average", lambda: 3.1)
    before = torch.get_num_threads()
    display = NullDisplay()
    outcome = run_experiment(parse_spec(SMALL.replace("{out}", str(tmp_path)), "t.toml"), display=display)
    cpus = threads.available_cpus(quota=threads.cgroup_cpus())
    assert f"torch threads: 1 (threads setting; {cpus} CPUs available)" in display.notes
    assert torch.get_num_threads() == before
    assert outcome.slow is not None
    assert "× the estimate of 0 s: the CPUs were busy (load 3.1 on" in outcome.slow
    assert "try --threads" not in outcome.slow  # it ran on one thread already


def test_threads_setting_is_checked(tmp_path):
    from remote_steer.errors import SpecError
    from remote_steer.run.spec import apply_overrides

    with pytest.raises(SpecError, match=r"t.toml:4: threads: expected a positive integer, got 0"):
        parse_spec(SMALL.replace("threads = 1", "threads = 0"), "t.toml")
    spec = parse_spec(SMALL, "t.toml")
    assert apply_overrides(spec, threads=3).threads == 3
    with pytest.raises(SpecError, match=r"--threads 0: expected a positive integer"):
        apply_overrides(spec, threads=0)


def test_cgroup_quota_of_a_nested_cgroup_is_the_smallest_on_its_way_up(tmp_path):
    proc = tmp_path / "self-cgroup"
    proc.write_text("0::/user.slice/run.scope\n")
    _write(tmp_path, "cg/user.slice/cpu.max", "300000 100000\n")
    _write(tmp_path, "cg/user.slice/run.scope/cpu.max", "max 100000\n")
    assert threads.cgroup_cpus(tmp_path / "cg", proc) == 3.0
    _write(tmp_path, "cg/user.slice/run.scope/cpu.max", "100000 100000\n")
    assert threads.cgroup_cpus(tmp_path / "cg", proc) == 1.0
    proc.write_text("4:memory:/x\n3:cpu,cpuacct:/docker/abc\n0::/\n")  # v1 beside an empty v2
    _write(tmp_path, "v1/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "250000\n")
    _write(tmp_path, "v1/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    assert threads.cgroup_cpus(tmp_path / "v1", proc) == 2.5
