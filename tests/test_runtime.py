"""Profile choice under simulated hardware: the rules every notebook's first cell relies on."""

import pytest

from helpers.runtime import Hardware, choose_profile

T4 = Hardware(
    cuda=True, gpu_name="Tesla T4", vram_gb=15.0, compute_capability=(7, 5), cpu_cores=2, colab=True
)
L4 = Hardware(cuda=True, gpu_name="NVIDIA L4", vram_gb=22.5, compute_capability=(8, 9))
A100 = Hardware(cuda=True, gpu_name="NVIDIA A100-SXM4-80GB", vram_gb=79.2, compute_capability=(8, 0))
A100_FA = Hardware(**{**A100.__dict__, "flash_attn_installed": True})
CPU = Hardware(cpu_cores=2, ram_gb=24.0)
MAC = Hardware(mps=True, cpu_cores=8, ram_gb=16.0)


def test_no_gpu_gives_tiny_on_cpu_in_fp32():
    p = choose_profile(CPU)
    assert (p.name, p.device, p.dtype, p.attn_implementation) == ("tiny", "cpu", "float32", "sdpa")
    assert p.models["base"].endswith("tiny-base")
    assert p.datasets["chat"].local_path is not None


def test_apple_mps_still_gets_tiny_and_says_why():
    p = choose_profile(MAC)
    assert p.name == "tiny" and "MPS" in p.reason


def test_t4_gives_colab_fp16_sdpa():
    p = choose_profile(T4)
    assert (p.name, p.device, p.dtype, p.attn_implementation) == ("colab", "cuda", "float16", "sdpa")
    assert not p.bf16 and p.fp16
    assert p.models["base"].startswith("HuggingFaceTB/")


def test_l4_is_colab_sized_but_has_bf16():
    p = choose_profile(L4)
    assert p.name == "colab" and p.dtype == "bfloat16"


def test_a100_gives_full_bf16_and_flash_attention_only_when_installed():
    assert choose_profile(A100).name == "full"
    assert choose_profile(A100).dtype == "bfloat16"
    assert choose_profile(A100).attn_implementation == "sdpa"
    assert choose_profile(A100_FA).attn_implementation == "flash_attention_2"
    assert choose_profile(T4).attn_implementation == "sdpa"


def test_course_profile_overrides_the_choice():
    assert choose_profile(A100, "tiny").name == "tiny"
    assert choose_profile(A100, " Colab ").name == "colab"
    assert choose_profile(A100, "colab").reason == "set by COURSE_PROFILE"


def test_mistyped_course_profile_names_the_valid_choices():
    with pytest.raises(ValueError, match="tiny, colab, full"):
        choose_profile(CPU, "tiyn")


@pytest.mark.parametrize("name", ["colab", "full"])
def test_gpu_profile_without_gpu_is_refused_with_the_fix(name):
    with pytest.raises(RuntimeError, match="COURSE_PROFILE=tiny"):
        choose_profile(CPU, name)


def test_profile_is_frozen_and_prints_a_summary():
    p = choose_profile(T4)
    with pytest.raises(AttributeError):
        p.name = "full"
    text = p.summary()
    assert "colab" in text and "Tesla T4" in text and "float16" in text and "SmolLM2" in text


def test_sizes_grow_with_the_profile():
    tiny, colab, full = (choose_profile(h).sizes for h in (CPU, T4, A100))
    assert tiny.n_train <= colab.n_train <= full.n_train
    assert tiny.max_length <= colab.max_length <= full.max_length
