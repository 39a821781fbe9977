"""Reduced precision stays faithful: bf16 output of the real default model vs fp32 on a photo."""

from __future__ import annotations

from pathlib import Path

from backend.models.registry import Registry
from backend.models.runtime import load_model
from backend.tasks import upscale
from tests.conftest import psnr


def test_bf16_within_40db_of_fp32(real_models: Path, face_crop) -> None:
    entry = Registry([real_models]).find("realesrgan-x4plus")
    img = face_crop[:48, :48]
    fp32 = upscale.run(img, load_model(entry, "cpu", "fp32"), upscale.UpscaleParams(tile=0))
    bf16 = upscale.run(img, load_model(entry, "cpu", "bf16"), upscale.UpscaleParams(tile=0))
    value = psnr(fp32, bf16)
    print(f"bf16 vs fp32 PSNR on realesrgan-x4plus: {value:.1f} dB")
    assert value > 40.0


def test_auto_precision_is_measured_and_cached(real_models: Path, restora_home: Path) -> None:
    entry = Registry([real_models]).find("realesr-animevideov3-x4")
    model = load_model(entry, "cpu", "auto")
    assert model.precision in ("fp32", "bf16")
    assert "measured" in model.precision_reason and "fp32" in model.precision_reason
    assert (restora_home / "cache" / "precision.json").is_file()


def test_measurement_is_announced_interleaved_and_redone_when_threads_change(
    models_root: Path, tmp_path: Path
) -> None:
    import torch

    from backend.devices import choose_precision, machine_identity
    from backend.models.loading import load_descriptor
    from tests.model_zoo import save_tiny

    descriptor = load_descriptor(save_tiny("compact", models_root))
    cache = tmp_path / "precision.json"
    heard: list[str] = []
    first = choose_precision(descriptor, torch.device("cpu"), "auto", cache, heard.append)
    assert len(heard) == 1 and "measuring the fastest precision for" in heard[0]
    assert first.label in ("fp32", "fp32 + channels-last", "bf16 + channels-last")
    assert "median per tile" in first.reason
    again = choose_precision(descriptor, torch.device("cpu"), "auto", cache, heard.append)
    assert len(heard) == 1 and again == first  # kept: measured once
    (record,) = __import__("json").loads(cache.read_text()).values()
    assert record["machine"] == machine_identity() and set(record["times"]) >= {"fp32"}
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads - 1) if threads > 1 else 2)
    try:
        choose_precision(descriptor, torch.device("cpu"), "auto", cache, heard.append)
    finally:
        torch.set_num_threads(threads)
    assert len(heard) == 2  # another thread count: measured again, for that count


def test_doctor_remeasure_forgets_and_measures_again(models_root: Path) -> None:
    from tests.cli_runner import restora
    from tests.model_zoo import save_tiny

    save_tiny("compact", models_root)
    up = restora("upscale", "--help")
    assert up.returncode == 0
    done = restora("doctor", "--remeasure", "-m", "tiny-compact")
    assert done.returncode == 0, done.stderr
    assert "measuring the fastest precision for" in done.stderr
    assert "tiny-compact (RealESRGAN Compact) on the CPU: " in done.stdout
    assert "threads" in done.stdout
    assert "measured: " in done.stdout
    shown = restora("doctor")
    assert shown.returncode == 0 and "measuring" not in shown.stderr
    assert "measured: " in shown.stdout
    assert "face detector kernels: compiled for this CPU" in shown.stdout
    assert "element-wise kernels (PReLU): compiled for this CPU" in shown.stdout


def test_cpu_bf16_weights_cast_once_give_the_same_bits(models_root: Path) -> None:
    """bf16 on a CPU keeps convolution weights in bf16 instead of letting autocast cast the
    fp32 ones on every call: the same values reach the same kernels, so the same output."""
    import torch

    from backend import cpu_fusion
    from backend.inference import prepare, run_tensor, set_memory_format
    from backend.models.loading import load_descriptor
    from tests.model_zoo import save_tiny

    descriptor = load_descriptor(save_tiny("compact", models_root))
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    set_memory_format(descriptor, True)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = descriptor(x.contiguous(memory_format=torch.channels_last))
    prepare(descriptor, torch.device("cpu"), "bf16", True)
    convs = [m for m in descriptor.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.weight.dtype == torch.bfloat16 for m in convs)
    with cpu_fusion.unfused():  # the claim is about the casts; fusion changes the sums' order
        got = run_tensor(descriptor, x, "bf16", True)
    assert torch.equal(got, expected.float().clamp(0, 1))
    fp32 = run_tensor(descriptor, x, "fp32")  # a measurement's fp32 run gets fp32 weights
    assert all(m.weight.dtype == torch.float32 for m in convs)
    assert fp32.dtype == torch.float32
