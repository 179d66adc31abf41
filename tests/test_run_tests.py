"""scripts/run_tests.py: make test's groups and CI's other checks share one queue, in a safe order."""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import rehearse
import run_tests


def test_ci_queue_rehearses_what_ci_promises_each_after_what_it_reads():
    groups = run_tests.GROUPS + run_tests.ci_groups(sys.executable)
    names = [g.name for g in groups]
    assert len(names) == len(set(names)), "two groups share a name: the scheduler would mix them up"
    by_name = {g.name: g for g in groups}
    rehearsed = {
        (nb, cmd[cmd.index("--profiles") + 1])
        for g in groups
        if "scripts/rehearse.py" in (cmd := g.command)
        for nb in cmd[cmd.index("scripts/rehearse.py") + 1 : cmd.index("--profiles")]
    }
    assert rehearsed == set(rehearse.ci_runs())
    assert not rehearsed & set(rehearse.NOT_IN_CI)
    for nb, profile in rehearse.ci_runs():  # 01 writes the data card that 05 and 07 read, per profile
        if Path(nb).stem in ("05_distillation", "07_gpu_tuning"):
            assert f"{profile} 01_token_lengths" in by_name[f"{profile} {Path(nb).stem}"].after
    assert all("stand-ins" in g.after for g in groups if "scripts/rehearse.py" in g.command)
    # 04 and 10 rehearse before what they would read (02's merged model, 09's chain): their own path
    assert "colab 04_dpo" in by_name["colab 02_lora_sft"].after and not by_name["colab 04_dpo"].after[1:]
    assert "colab 10_evaluate_and_ship" in by_name["colab 09_rl_grpo"].after
    assert {"e2e", "colab-check", "test-min"} <= set(names)


def test_a_group_waits_for_the_groups_it_reads_from():
    first = run_tests.Group(("a",), 1.0, command=("true",))
    second = run_tests.Group(("b",), 9.0, after=("a",), command=("true",))
    other = run_tests.Group(("c",), 0.5, command=("true",))
    queue = run_tests.Scheduler([first, second, other])
    assert queue.take() is first  # b has the longest chain behind a, so a goes first
    assert queue.take() is other  # b is not ready while a runs
    queue.done(first)
    assert queue.take() is second


def test_a_thread_cap_from_outside_holds_and_never_raises_a_lanes_share(monkeypatch):
    cores = os.cpu_count() or 1
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert run_tests.lane_threads(1) == cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # make test-min inside one of CI's two lanes
    assert run_tests.lane_threads(1) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", str(cores * 4))
    assert run_tests.lane_threads(2) == max(1, cores // 2)


def test_a_group_whose_processes_use_no_cpu_is_stopped_and_run_again(tmp_path, monkeypatch):
    # As a hung kernel: the first run sleeps (no CPU anywhere in its tree), the second passes.
    marker = tmp_path / "ran-once"
    test = tmp_path / "test_sleeps_once.py"
    test.write_text(
        "import pathlib, time\n\n\ndef test_once():\n"
        f"    marker = pathlib.Path({str(marker)!r})\n"
        "    if not marker.exists():\n"
        "        marker.touch()\n"
        "        time.sleep(600)\n"
    )
    monkeypatch.setattr(run_tests, "IDLE_S", 8.0)
    start = time.perf_counter()
    rows = run_tests.run_lanes([run_tests.Group((str(test),), 1.0)], 1, sys.executable, [])
    assert rows[0]["ok"] and marker.exists()
    assert time.perf_counter() - start < 120
