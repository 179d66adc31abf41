"""From one machine to a cluster, run for real on this one: two nodes, a SLURM job, LLaMA-Factory's CLI.

    make cluster-check                              # all three, in this order
    python scripts/cluster_check.py two-nodes       # one of them

two-nodes     scripts/train_distributed.py (DDP over gloo) as two "nodes" on localhost: two torchrun
              launchers (--nnodes 2 each) that meet at a c10d rendezvous, as on two machines; every step's loss is compared with one process on the same global batches.
slurm         scripts/slurm/train.sbatch submitted with `sbatch` to a one-host SLURM cluster started
              here (Debian's slurm-wlm and munge; `apt-get install slurm-wlm munge`, as root). Debian's
              build cannot run two slurmd on one host, so the job is one node with two tasks, each
              task one torchrun "node"; the losses are checked as above.
llamafactory  LLaMA-Factory's CLI in a venv of its own (.venv-llamafactory: it pins older trl, peft and
              transformers) trains data/llamafactory_sft_lora.yaml on the tiny base model, overridden
              with notebook 02's `tiny` settings; `llamafactory-cli export` merges the adapter with
              data/llamafactory_merge_lora.yaml; the merged model loads in the course's stack and is
              scored on the held-out questions beside notebook 02's merged model (run 02 first).

Results go to build/cluster/ and, for notebook 02 to show, the course cache's runs/tiny/llamafactory/.
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "build" / "cluster"
PYTHON = sys.executable
STEPS = 20
TOLERANCE = 1e-4  # largest loss difference from one process, as notebook 06 asserts for one node
LF_VENV = ROOT / ".venv-llamafactory"
LF_PACKAGES = ["torch==2.13.0", "llamafactory==0.9.5"]
SUDO = [] if os.geteuid() == 0 else ["sudo"]


def launch_env() -> dict[str, str]:
    """Two CPU processes over gloo on the tiny models, as notebook 06 runs them without two GPUs."""
    return dict(
        os.environ,
        ACCELERATE_USE_CPU="true",
        CUDA_VISIBLE_DEVICES="",
        COURSE_PROFILE="tiny",
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(out: Path) -> list[float]:
    ranks = sorted(out.glob("rank*.json"))
    if not ranks:
        raise RuntimeError(f"no rank*.json in {out}: the ranks did not finish (see the logs above)")
    return json.loads(ranks[0].read_text())["losses"]


def single_process() -> list[float]:
    """The reference: one process, the same global batches (run once per invocation, then reused)."""
    out = OUT / "single"
    if not (out / "rank0.json").exists():  # main() clears it: an earlier commit's run is no reference
        cmd = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"]
        cmd += [
            "scripts/train_distributed.py",
            "--strategy",
            "single",
            "--steps",
            str(STEPS),
            "--out",
            str(out),
        ]
        subprocess.run(cmd, env=launch_env(), cwd=ROOT, check=True, capture_output=True, text=True)
    return losses(out)


def compare(name: str, got: list[float]) -> dict:
    ref = single_process()
    gap = max(abs(a - b) for a, b in zip(got, ref, strict=True))
    print(
        f"  {name}: {len(got)} steps, loss {got[0]:.4f} -> {got[-1]:.4f}; largest difference from one process {gap:.1e}"
    )
    if gap > TOLERANCE:
        raise RuntimeError(f"{name}: losses differ from one process by {gap:.1e} (> {TOLERANCE:g})")
    return {"losses": got, "single_process": ref, "largest_difference": gap}


def two_nodes() -> dict:
    out = OUT / "two-nodes"
    shutil.rmtree(out, ignore_errors=True)
    port, logs, procs = free_port(), [], []
    for node in (0, 1):  # on a cluster: one of these per machine, --rdzv-endpoint the first node's address
        cmd = [PYTHON, "-m", "torch.distributed.run", "--nnodes", "2"]  # the rendezvous numbers the nodes
        cmd += ["--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"]
        cmd += ["--rdzv-id", "course-two-nodes", "scripts/train_distributed.py", "--strategy", "ddp"]
        cmd += ["--steps", str(STEPS), "--out", str(out)]
        log = (OUT / f"two-nodes-node{node}.log").open("w")
        logs.append(log)
        procs.append(subprocess.Popen(cmd, env=launch_env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
    codes = [p.wait(timeout=600) for p in procs]
    for log in logs:
        log.close()
    if any(codes):
        for node in (0, 1):
            print(f"--- node {node} (last 30 lines) ---")
            print("\n".join((OUT / f"two-nodes-node{node}.log").read_text().splitlines()[-30:]))
        raise RuntimeError(f"two-node launch failed: exit codes {codes}")
    return compare("two nodes x 1 process, c10d rendezvous on localhost", losses(out))


# --- a one-host SLURM cluster -------------------------------------------------------------------------


def slurm_conf(folder: Path) -> Path:
    host = socket.gethostname()
    mem_mb = int(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 * 0.8)
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=course",
                f"SlurmctldHost={host}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                f"StateSaveLocation={folder}/state",
                f"SlurmdSpoolDir={folder}/spool",
                f"SlurmctldPidFile={folder}/slurmctld.pid",
                f"SlurmdPidFile={folder}/slurmd.pid",
                f"SlurmctldLogFile={folder}/slurmctld.log",
                f"SlurmdLogFile={folder}/slurmd.log",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "JobAcctGatherType=jobacct_gather/none",
                "SchedulerType=sched/builtin",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "ReturnToService=2",
                "MpiDefault=none",
                f"NodeName={host} CPUs={os.cpu_count()} RealMemory={mem_mb} State=UNKNOWN",
                "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    return conf


def start_munge() -> None:
    if subprocess.run(["munge", "-n"], check=False, capture_output=True).returncode == 0:
        return  # already running
    subprocess.run([*SUDO, "install", "-d", "-o", "munge", "-g", "munge", "/run/munge"], check=True)
    subprocess.run([*SUDO, "runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
    if subprocess.run(["munge", "-n"], check=False, capture_output=True).returncode != 0:
        raise RuntimeError("munged did not start: SLURM authenticates every message with munge")


def start_slurm(folder: Path) -> dict[str, str]:
    missing = [tool for tool in ("sbatch", "slurmctld", "slurmd", "munged") if not shutil.which(tool)]
    if missing:
        raise RuntimeError(
            f"SLURM is not installed here ({', '.join(missing)} missing): on Debian or Ubuntu, "
            "`sudo apt-get install slurm-wlm munge`"
        )
    conf = slurm_conf(folder)
    env = dict(os.environ, SLURM_CONF=str(conf))
    start_munge()
    subprocess.run([*SUDO, "pkill", "-x", "slurmctld"], check=False)
    subprocess.run([*SUDO, "pkill", "-x", "slurmd"], check=False)
    time.sleep(1)
    subprocess.run([*SUDO, "slurmctld", "-f", str(conf)], check=True)
    subprocess.run([*SUDO, "slurmd", "-f", str(conf)], check=True)
    for _ in range(60):
        state = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], check=False, env=env, capture_output=True, text=True
        ).stdout
        if "idle" in state:
            return env
        time.sleep(1)
    raise RuntimeError(f"SLURM's node never became idle ({state.strip() or 'no answer'}); see {folder}/*.log")


def slurm() -> dict:
    folder = OUT / "slurm"
    shutil.rmtree(folder, ignore_errors=True)
    env = start_slurm(folder)
    out = folder / "run"
    try:
        job_env = launch_env() | {
            "SLURM_CONF": env["SLURM_CONF"],
            "PYTHON": PYTHON,
            "OUT": str(out),
            "STEPS": str(STEPS),
            "MASTER_PORT": str(free_port()),  # not 29500: another job on this host may hold it
        }
        cmd = ["sbatch", "--parsable", "--nodes", "1", "--ntasks-per-node", "2", "--gpus-per-node", "0"]
        cmd += ["--cpus-per-task", "1", "--output", f"{folder}/job-%j.out", "scripts/slurm/train.sbatch"]
        job = subprocess.run(
            cmd, env=job_env, cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout.strip()
        print(f"  submitted job {job}: `{' '.join(cmd)}`")
        state = "PENDING"
        for _ in range(600):
            show = subprocess.run(
                ["scontrol", "show", "job", job], check=False, env=env, capture_output=True, text=True
            ).stdout
            state = next((w.split("=")[1] for w in show.split() if w.startswith("JobState=")), "UNKNOWN")
            if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
                break
            time.sleep(1)
        log = folder / f"job-{job}.out"
        text = log.read_text() if log.exists() else ""
        print("\n".join(f"    {line}" for line in text.splitlines() if line.startswith(("job ", "[rank"))))
        if state != "COMPLETED":
            print("\n".join(text.splitlines()[-30:]))
            raise RuntimeError(f"SLURM job {job} ended {state}; its output is {log}")
        return {"job": job, "state": state} | compare("SLURM job, 1 node x 2 tasks", losses(out))
    finally:
        subprocess.run(["scontrol", "shutdown"], env=env, capture_output=True, check=False)


# --- LLaMA-Factory ------------------------------------------------------------------------------------

TORCHAUDIO_PLACEHOLDER = '''"""Placeholder for torchaudio, which has no release for this venv's torch (2.13, CPU build).
LLaMA-Factory imports torchaudio at start-up for audio models only; text fine-tuning never calls it.
Written by scripts/cluster_check.py."""


def __getattr__(name):
    raise ImportError(f"torchaudio.{name}: torchaudio is not installed here (no release for this torch)")
'''


def llamafactory_venv() -> Path:
    """.venv-llamafactory with LLaMA-Factory and the CPU torch the course pins (built once)."""
    cli = LF_VENV / "bin" / "llamafactory-cli"
    if cli.exists():
        return cli
    print(f"  creating {LF_VENV.name}: {' '.join(LF_PACKAGES)} (about a minute)")
    subprocess.run([sys.executable, "-m", "venv", str(LF_VENV)], check=True)
    pip = [str(LF_VENV / "bin" / "python"), "-m", "pip", "install", "-qq"]  # errors only
    subprocess.run([*pip, *LF_PACKAGES], check=True)
    # torchvision and torchaudio come as builds for another torch; their compiled ops fail to load
    # against the CPU build (torchvision's nms, torchaudio's library). Text fine-tuning needs neither;
    # transformers skips torchvision when it is absent, and LLaMA-Factory imports torchaudio only by name.
    subprocess.run(
        [
            str(LF_VENV / "bin" / "python"),
            "-m",
            "pip",
            "uninstall",
            "--quiet",
            "-y",
            "torchvision",
            "torchaudio",
        ],
        check=True,
    )
    site = next((LF_VENV / "lib").glob("python3*/site-packages"))
    (site / "torchaudio").mkdir(exist_ok=True)
    (site / "torchaudio" / "__init__.py").write_text(TORCHAUDIO_PLACEHOLDER)
    return cli


def tiny_02_settings() -> tuple[list[dict], dict[str, str]]:
    """Notebook 02's `tiny` training rows (notebook 01's kept rows) and its settings, as
    LLaMA-Factory overrides of data/llamafactory_sft_lora.yaml (written for `colab`)."""
    from helpers.data import load_split
    from helpers.lengths import load_data_card, valid_rows
    from helpers.registry import tiny_dir
    from helpers.runtime import get_profile

    profile = get_profile()
    card = load_data_card(profile.name)
    rows, _ = valid_rows(
        load_split(profile, "chat", "train", n=card["rows_measured"] if card else profile.sizes.n_train)
    )
    max_length = profile.sizes.max_length
    if card:
        rows, max_length = [rows[i] for i in card["kept_rows"]], card["max_length"]
    rows = [{"messages": r["messages"]} for r in rows[: profile.sizes.n_train]]
    s = profile.sizes
    overrides = {
        "model_name_or_path": str(tiny_dir() / "tiny-base"),
        "dataset": "course_chat",
        "template": "chatml",  # the tiny tokenizer's template is ChatML, as SmolLM2-Instruct's
        "cutoff_len": str(max_length),
        "max_samples": str(len(rows)),
        "preprocessing_num_workers": "1",
        "per_device_train_batch_size": str(s.batch_size),
        "gradient_accumulation_steps": str(s.grad_accum),
        "learning_rate": "3.0e-3",  # notebook 02's rate for a 0.5 M-parameter model
        "max_steps": str(s.max_steps),
        "fp16": "false",
        "seed": str(profile.seed),
        "report_to": "none",
        "save_steps": str(s.max_steps),
        "disable_tqdm": "true",
    }
    return rows, overrides


def score(path: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from helpers.data import task_set
    from helpers.generation import generate_replies
    from helpers.metrics import binomial_interval, exact_match, exact_match_by_group

    items = task_set(200)
    questions = [r["messages"][:-1] for r in items]
    answers = [r["messages"][-1]["content"] for r in items]
    tokenizer = AutoTokenizer.from_pretrained(path)
    replies = generate_replies(
        AutoModelForCausalLM.from_pretrained(path), tokenizer, questions, max_new_tokens=32
    )
    em = exact_match(replies, answers)
    return {
        "exact_match": em,
        "interval_95": binomial_interval(em, len(items)),
        "per_skill": exact_match_by_group(replies, answers, [r["skill"] for r in items]),
    }


def llamafactory() -> dict:
    from helpers.registry import runs_dir

    cli = llamafactory_venv()
    work = OUT / "llamafactory"
    shutil.rmtree(work, ignore_errors=True)
    (work / "data").mkdir(parents=True)
    rows, overrides = tiny_02_settings()
    (work / "data" / "chat.json").write_text(json.dumps(rows))
    (work / "data" / "dataset_info.json").write_text(
        json.dumps(
            {
                "course_chat": {
                    "file_name": "chat.json",
                    "formatting": "sharegpt",
                    "columns": {"messages": "messages"},
                    "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                             "assistant_tag": "assistant", "system_tag": "system"},
                }
            }
        )
    )  # fmt: skip
    overrides |= {"dataset_dir": str(work / "data"), "output_dir": str(work / "adapter")}
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", DISABLE_VERSION_CHECK="1")
    train = [
        str(cli),
        "train",
        "data/llamafactory_sft_lora.yaml",
        *(f"{k}={v}" for k, v in overrides.items()),
    ]
    start = time.perf_counter()
    run_logged(train, work / "train.log", env)
    train_s = time.perf_counter() - start
    merged = work / "merged"
    export = [str(cli), "export", "data/llamafactory_merge_lora.yaml", f"model_name_or_path={overrides['model_name_or_path']}",
              f"adapter_name_or_path={work / 'adapter'}", f"export_dir={merged}"]  # fmt: skip
    run_logged(export, work / "export.log", env)
    if not (merged / "model.safetensors").exists():
        raise RuntimeError(f"llamafactory-cli export wrote no model.safetensors in {merged}")
    result = {
        "commands": [" ".join(train[1:3]) + " <overrides>", " ".join(export[1:3]) + " <overrides>"],
        "overrides": overrides,
        "train_s": round(train_s, 1),
        "base": score(Path(overrides["model_name_or_path"])),
        "llamafactory": score(merged),
    }
    ours = runs_dir("tiny", "02_lora_sft") / "merged"
    if ours.exists():
        result["notebook_02"] = score(ours)
    for name in ("base", "llamafactory", "notebook_02"):
        if name in result:
            r = result[name]
            low, high = r["interval_95"]
            print(f"  {name}: held-out exact match {r['exact_match']:.1%} ({low:.0%} to {high:.0%})")
    if "notebook_02" not in result:
        print(f"  notebook 02's merged model is not in {ours}: run notebook 02 for the side-by-side score")
    gain = result["llamafactory"]["exact_match"] - result["base"]["exact_match"]
    if gain < 0.2:
        raise RuntimeError(
            f"LLaMA-Factory's model gained {gain:.1%} over the base model (20 points expected)"
        )
    dest = runs_dir("tiny", "llamafactory")
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "score.json").write_text(json.dumps(result, indent=1))
    return result


def run_logged(cmd: list[str], log: Path, env: dict[str, str]) -> None:
    with log.open("w") as f:
        code = subprocess.run(
            cmd, check=False, env=env | {"OMP_NUM_THREADS": "1"}, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT
        ).returncode
    if code:
        print("\n".join(log.read_text().splitlines()[-30:]))
        raise RuntimeError(f"`{' '.join(cmd[:3])} ...` failed (exit {code}); its log: {log}")


CHECKS = {"two-nodes": two_nodes, "slurm": slurm, "llamafactory": llamafactory}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checks", nargs="*", help=f"any of {', '.join(CHECKS)} (default: all)")
    args = parser.parse_args()
    unknown = [c for c in args.checks if c not in CHECKS]
    if unknown:
        parser.error(f"unknown check {unknown}: choose from {', '.join(CHECKS)}")
    os.environ.setdefault("COURSE_PROFILE", "tiny")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(OUT / "single", ignore_errors=True)
    failed = []
    for name in args.checks or list(CHECKS):
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            result = CHECKS[name]()
            (OUT / f"{name}.json").write_text(json.dumps(result, indent=1))
            print(f"== {name}: passed in {time.perf_counter() - start:.0f} s", flush=True)
        except (RuntimeError, subprocess.SubprocessError, OSError) as err:
            failed.append(name)
            print(f"== {name}: FAILED in {time.perf_counter() - start:.0f} s: {err}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
