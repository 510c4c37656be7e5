import pytest
import torch

from labkit.utils.device import DeviceError, amp_policy, get_device, missing_kernels_message


def test_pascal_gets_no_amp_by_default_with_reason():
    policy = amp_policy("cuda", (6, 1))
    assert not policy.enabled and "no tensor cores" in policy.reason


def test_turing_gets_fp16_with_scaler():
    policy = amp_policy("cuda", (7, 5))
    assert policy.enabled and policy.dtype == torch.float16 and policy.use_scaler


def test_ampere_gets_bf16_without_scaler():
    policy = amp_policy("cuda", (8, 6))
    assert policy.enabled and policy.dtype == torch.bfloat16 and not policy.use_scaler


def test_cpu_default_off_and_explicit_choices():
    assert not amp_policy("cpu").enabled
    assert amp_policy("cpu", requested="bf16").dtype == torch.bfloat16
    assert not amp_policy("cuda", (8, 0), requested="off").enabled
    # fp16 can still be forced on Pascal (e.g. to save memory), with a scaler
    forced = amp_policy("cuda", (6, 1), requested="fp16")
    assert forced.enabled and forced.use_scaler


def test_bf16_on_pascal_is_refused():
    with pytest.raises(DeviceError, match="bf16 needs compute capability >= 8.0"):
        amp_policy("cuda", (6, 1), requested="bf16")


def test_bad_amp_value():
    with pytest.raises(DeviceError, match="amp must be one of"):
        amp_policy("cpu", requested="half")


@pytest.mark.parametrize(
    ("capability", "arch_list", "ok"),
    [
        ((6, 1), ["sm_75", "sm_80", "sm_86", "sm_90", "compute_90"], False),  # default wheels ≥ 2.8
        ((6, 1), ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80"], True),  # cu126 wheels
        ((6, 1), ["sm_60"], True),  # same major, lower minor: binary compatible
        ((8, 6), ["sm_80", "sm_90"], True),
        ((12, 0), ["sm_80", "sm_90", "compute_90"], True),  # newer GPU: PTX is JIT-compiled
        ((7, 5), ["sm_80", "sm_90"], False),
    ],
)
def test_missing_kernels_detection(capability, arch_list, ok):
    message = missing_kernels_message(capability, arch_list)
    assert (message is None) == ok
    if capability == (6, 1) and not ok:
        assert "cu126" in message  # says how to fix it


def test_get_device_cpu_and_bad_preference():
    assert get_device("cpu").type == "cpu"
    with pytest.raises(DeviceError, match="device must be"):
        get_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_cuda_requested_without_gpu_says_what_to_do():
    assert get_device("auto").type == "cpu"
    with pytest.raises(DeviceError, match="--device cpu"):
        get_device("cuda")
