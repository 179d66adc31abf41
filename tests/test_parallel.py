"""Multi-GPU planning (helpers.parallel) and the ready configs in data/ (notebook 06)."""

import itertools
import json
from types import SimpleNamespace

import pytest
import torch
import yaml

from helpers.memory import GiB, reference_configs
from helpers.parallel import pick_strategy, strategy_table
from helpers.registry import course_root

DATA = course_root() / "data"
DS_CONFIGS = ["ds_z2.json", "ds_z3.json", "ds_z3_offload.json"]


def test_small_models_stay_on_plain_data_parallelism():
    configs = reference_configs()
    name, plan = pick_strategy(configs["SmolLM2-135M"], n_gpus=2, gpu_gib=79.1)
    assert name == "DDP" and plan.total < 79.1 * GiB


def test_bigger_models_move_to_sharding_and_more_gpus_never_cost_more_per_gpu():
    config = reference_configs()["Llama-3.1-8B"]
    name_1, _ = pick_strategy(config, n_gpus=1, gpu_gib=79.1)
    assert name_1 != "DDP"  # 8B full fine-tuning needs > 120 GiB of model states
    per_gpu = [pick_strategy(config, n, 79.1)[1].total for n in (2, 4, 8)]
    assert all(b <= a * 1.0001 for a, b in itertools.pairwise(per_gpu))
    name_t4, _ = pick_strategy(reference_configs()["Llama-3.1-70B"], n_gpus=1, gpu_gib=15.0)
    assert name_t4 == "does not fit"


def test_strategy_table_has_a_cell_per_model_and_gpu_count():
    configs = {k: v for k, v in reference_configs().items() if k in ("SmolLM2-135M", "Llama-3.1-8B")}
    table = strategy_table(configs, (1, 8), 79.1)
    assert table.shape == (2, 2) and table.loc["SmolLM2-135M", "1 GPU"].startswith("DDP")


@pytest.mark.parametrize("name", DS_CONFIGS)
def test_deepspeed_configs_leave_precision_and_batch_to_the_trainer(name):
    config = json.loads((DATA / name).read_text())
    assert config["fp16"]["enabled"] == "auto" and config["bf16"]["enabled"] == "auto"
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        assert config[key] == "auto", key
    stage = config["zero_optimization"]["stage"]
    assert stage == int(name[4]), "the file name says the stage"
    assert ("offload" in name) == ("offload_optimizer" in config["zero_optimization"])


def _trainer_args(bf16: bool, fp16: bool) -> SimpleNamespace:
    """The TrainingArguments fields HF's DeepSpeed integration reads (no GPU needed to build)."""
    return SimpleNamespace(
        world_size=2,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_grad_norm=1.0,
        learning_rate=1e-4,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        weight_decay=0.0,
        save_on_each_node=False,
        fp16=fp16,
        fp16_full_eval=False,
        bf16=bf16,
        bf16_full_eval=False,
        get_warmup_steps=lambda n: 0,
    )


def _resolve(config: dict, args) -> dict:
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    model = SimpleNamespace(config=SimpleNamespace(hidden_size=64))
    ds = HfTrainerDeepSpeedConfig(config)
    ds.trainer_config_process(args)
    ds.trainer_config_finalize(args, model, num_training_steps=10)
    return ds.config


@pytest.mark.parametrize("name", DS_CONFIGS)
@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_auto_values_follow_the_trainer_precision(name, precision):
    args = _trainer_args(bf16=precision == "bf16", fp16=precision == "fp16")
    resolved = _resolve(json.loads((DATA / name).read_text()), args)
    assert resolved["bf16"]["enabled"] is (precision == "bf16")
    assert resolved["fp16"]["enabled"] is (precision == "fp16")
    assert resolved["train_batch_size"] == 2 * 4 * 2


def test_a_hard_coded_precision_that_disagrees_with_the_trainer_is_refused():
    config = json.loads((DATA / "ds_z2.json").read_text())
    config["bf16"]["enabled"] = True  # the mistake: bf16 in the file, fp16 (a T4) in the trainer
    with pytest.raises(ValueError, match="bf16"):
        _resolve(config, _trainer_args(bf16=False, fp16=True))


@pytest.mark.parametrize("name", ["accelerate_ddp.yaml", "accelerate_fsdp.yaml"])
def test_accelerate_configs_load_as_accelerate_reads_them(name):
    from accelerate.commands.config.config_args import ClusterConfig

    raw = yaml.safe_load((DATA / name).read_text())
    config = ClusterConfig.from_yaml_file(str(DATA / name))
    assert config.num_processes == raw["num_processes"] == 2
    assert str(config.distributed_type).endswith(("MULTI_GPU", "FSDP"))
    if "fsdp" in name:
        assert config.fsdp_config["fsdp_version"] == 2
        # The layer class named for wrapping exists in transformers.
        from transformers.models.llama import modeling_llama

        assert hasattr(modeling_llama, config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"])


def test_fsdp_and_tensor_parallel_apis_exist_in_this_torch():
    from torch.distributed.fsdp import fully_shard  # noqa: F401
    from torch.distributed.tensor.parallel import ColwiseParallel, parallelize_module  # noqa: F401

    assert torch.distributed.is_available()


def test_llamafactory_config_matches_notebook_02_on_colab():
    from helpers.registry import HUB_MODELS, SIZES

    config = yaml.safe_load((DATA / "llamafactory_sft_lora.yaml").read_text())
    colab = SIZES["colab"]
    assert config["model_name_or_path"] == HUB_MODELS["colab"]["base"]
    assert config["trust_remote_code"] is False
    assert (config["lora_rank"], config["lora_alpha"]) == (16, 32)  # notebook 02's LoraConfig
    assert config["per_device_train_batch_size"] == colab.batch_size
    assert config["gradient_accumulation_steps"] == colab.grad_accum
    assert config["max_steps"] == colab.max_steps
    assert not (config.get("bf16") and config.get("fp16")), "one mixed precision at a time"


def test_rank_logs_show_the_failing_ranks_own_traceback(tmp_path):
    """Notebook 06 prints a failed launch's rank stderr, read back with rank_logs."""
    import subprocess
    import sys

    from helpers.parallel import rank_logs

    script = tmp_path / "fails.py"
    script.write_text(
        "import os\nif os.environ['RANK'] == '1':\n    raise ValueError('planted on rank 1')\nprint('rank 0 fine')\n"
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["--log-dir", str(tmp_path / "logs"), "--redirects", "3", str(script)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode != 0
    stderr, stdout = rank_logs(tmp_path / "logs", "stderr"), rank_logs(tmp_path / "logs", "stdout")
    assert "ValueError: planted on rank 1" in stderr[1] and "planted" not in stderr[0]
    assert "rank 0 fine" in stdout[0]
    assert rank_logs(tmp_path / "nothing") == {}


def _hostfile_slots() -> dict[str, int]:
    lines = [ln.split() for ln in (DATA / "deepspeed_hostfile").read_text().splitlines()]
    return {ln[0]: int(ln[1].split("=")[1]) for ln in lines if ln and not ln[0].startswith("#")}


def _sbatch_directives() -> dict[str, str]:
    text = (DATA.parent / "scripts" / "slurm" / "train.sbatch").read_text()
    return dict(
        ln[len("#SBATCH --") :].split("=", 1) for ln in text.splitlines() if ln.startswith("#SBATCH --")
    )


def test_the_multi_node_configs_describe_one_cluster():
    """accelerate's multi-node config, DeepSpeed's hostfile and the sbatch script: 2 machines x 4 GPUs."""
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(DATA / "accelerate_multinode.yaml"))
    slots = _hostfile_slots()
    sbatch = _sbatch_directives()
    assert config.num_machines == len(slots) == int(sbatch["nodes"]) == 2
    assert config.num_processes == sum(slots.values()) == int(sbatch["nodes"]) * int(sbatch["gpus-per-node"])
    assert config.machine_rank == 0 and config.main_process_ip and config.main_process_port
    assert sbatch["ntasks-per-node"] == "1", "one torchrun launcher per node; it starts one process per GPU"


def test_the_sbatch_script_launches_one_torchrun_per_task_at_a_c10d_rendezvous():
    text = (DATA.parent / "scripts" / "slurm" / "train.sbatch").read_text()
    for needed in (
        "srun",
        "--nnodes $SLURM_NTASKS",
        "--rdzv-backend c10d",
        "scontrol show hostnames",
        "scripts/train_distributed.py",
    ):
        assert needed in text, needed
