"""Which PyTorch build this machine needs: the hardware it has, and the choice table.

`probe_hardware()` runs the vendors' tools (nvidia-smi, rocminfo, lspci, ...) and keeps what
they print; the `parse_*` functions and `choose_torch()` are pure, so every row of the table
is tested with recorded outputs of those tools. Standard library only: the installer runs it
with a bare Python.

The table, first match wins:
1. macOS: the default PyPI wheel (Apple Silicon: it runs on the GPU through MPS). PyTorch has
   no build for Intel Macs since 2.3, nor for an x86-64 Python under Rosetta.
2. NVIDIA GPU: the newest CUDA build the driver runs and the GPU has kernels in.
3. AMD GPU with ROCm (Linux): the newest ROCm build not newer than the installed ROCm.
4. Intel Arc / Data Center GPU (Linux, Windows): the XPU build.
5. Otherwise the CPU build (a tenth of a CUDA build's size), from PyTorch's CPU index where it
   publishes one; Linux on ARM gets PyPI's wheel, which is CPU-only there.
"""

from __future__ import annotations

import platform as _platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PYTORCH_INDEX = "https://download.pytorch.org/whl"

Version = tuple[int, int]


@dataclass(frozen=True)
class CudaBuild:
    tag: str  # the index's name and the wheels' local version, e.g. cu128
    cuda: Version
    #: the GPU architectures (compute capabilities) the build has kernels for
    oldest_gpu: Version
    newest_gpu: Version


#: The builds PyTorch publishes for the pinned release, newest first. Update them with the pin in
#: torch-requirements.txt. CUDA 12.8 added Blackwell (sm_100/sm_120) and dropped Maxwell and
#: Pascal; CUDA 13 also dropped Volta.
CUDA_BUILDS = (
    CudaBuild("cu130", (13, 0), (7, 5), (12, 1)),
    CudaBuild("cu128", (12, 8), (7, 0), (12, 0)),
    CudaBuild("cu126", (12, 6), (5, 0), (9, 0)),
)
ROCM_BUILDS: tuple[tuple[str, Version], ...] = (("rocm6.4", (6, 4)), ("rocm6.3", (6, 3)))
XPU_BUILD = "xpu"
CPU_BUILD = "cpu"
#: the wheel pip finds on its default index (PyPI): no local version, no special index
DEFAULT_BUILD = "default"
VARIANTS = (
    *(b.tag for b in CUDA_BUILDS),
    *(tag for tag, _ in ROCM_BUILDS),
    XPU_BUILD,
    CPU_BUILD,
    DEFAULT_BUILD,
)


@dataclass(frozen=True)
class NvidiaGpu:
    name: str
    compute: Version | None  # compute capability; None when the driver is too old to say


@dataclass(frozen=True)
class Hardware:
    """What the installer found, in plain values (tests build these by hand)."""

    system: str  # "linux", "windows" or "darwin"
    machine: str  # "x86_64" or "arm64"
    nvidia_cuda: Version | None = None  # the CUDA version the NVIDIA driver supports
    nvidia_gpus: tuple[NvidiaGpu, ...] = ()
    amd_gpus: tuple[str, ...] = ()  # gfx targets ROCm sees (gfx1100) or GPU names
    rocm: Version | None = None  # the installed ROCm, when one is
    rocm_runtime: bool = False  # rocminfo ran and listed a GPU agent
    intel_gpus: tuple[str, ...] = ()  # names of Intel GPUs
    rosetta: bool = False  # an x86-64 Python translated on Apple Silicon

    def describe(self) -> str:
        parts = [f"{self.system} {self.machine}"]
        for gpu in self.nvidia_gpus:
            cc = f", compute {gpu.compute[0]}.{gpu.compute[1]}" if gpu.compute else ""
            parts.append(f"NVIDIA {gpu.name}{cc}")
        if self.nvidia_cuda:
            parts.append(f"NVIDIA driver for CUDA {_v(self.nvidia_cuda)}")
        parts += [f"AMD {g}" for g in self.amd_gpus]
        if self.rocm:
            parts.append(f"ROCm {_v(self.rocm)}")
        parts += [f"Intel {g}" for g in self.intel_gpus]
        return "; ".join(parts)


@dataclass(frozen=True)
class TorchChoice:
    variant: str  # one of VARIANTS
    reason: str  # one sentence a person understands
    #: set when nothing can be installed (an Intel Mac): what to do instead
    problem: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def index_url(self) -> str | None:
        """PyTorch's index for the variant; None for the default index (PyPI)."""
        return None if self.variant == DEFAULT_BUILD else f"{PYTORCH_INDEX}/{self.variant}"


def _v(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


# --- the choice table -------------------------------------------------------------------------


def choose_torch(hw: Hardware) -> TorchChoice:
    """The PyTorch build for this hardware (see the module's docstring for the table)."""
    if hw.system == "darwin":
        return _choose_macos(hw)
    notes: list[str] = []
    if hw.nvidia_gpus or hw.nvidia_cuda:
        cuda = _choose_cuda(hw)
        if cuda.variant != CPU_BUILD:
            return cuda
        notes.append(cuda.reason)
    if hw.amd_gpus or hw.rocm_runtime:
        rocm = _choose_rocm(hw)
        if rocm.variant != CPU_BUILD:
            return rocm
        notes.append(rocm.reason)
    arc = [g for g in hw.intel_gpus if re.search(r"\bArc\b|Data Center GPU|\bFlex\b", g)]
    if arc and hw.machine == "x86_64" and hw.system in ("linux", "windows"):
        return TorchChoice(
            XPU_BUILD, f"Intel GPU found ({arc[0]}): PyTorch's XPU build.", notes=tuple(notes)
        )
    if hw.system == "linux" and hw.machine == "arm64":
        return TorchChoice(
            DEFAULT_BUILD,
            "No supported GPU: PyPI's PyTorch, which is the CPU build on ARM Linux.",
            notes=tuple(notes),
        )
    return TorchChoice(
        CPU_BUILD, "No supported GPU: PyTorch's CPU build (the smallest).", notes=tuple(notes)
    )


def _choose_macos(hw: Hardware) -> TorchChoice:
    if hw.rosetta:
        return TorchChoice(
            DEFAULT_BUILD,
            "",
            problem=(
                "This Python is an Intel (x86-64) Python running under Rosetta; PyTorch needs a "
                "native Apple Silicon Python. Install one (https://www.python.org/downloads/macos/ "
                "or `brew install python@3.12` in an arm64 Homebrew) and run the installer with it."
            ),
        )
    if hw.machine != "arm64":
        return TorchChoice(
            DEFAULT_BUILD,
            "",
            problem=(
                "PyTorch publishes no builds for Intel Macs since version 2.3, and Restora needs "
                "a newer one. Run the backend on another machine (`restora serve --host 0.0.0.0 "
                "--token ...`) and point the plug-ins at it."
            ),
        )
    return TorchChoice(
        DEFAULT_BUILD, "Apple Silicon: PyPI's PyTorch, which runs on the GPU through Metal (MPS)."
    )


def _choose_cuda(hw: Hardware) -> TorchChoice:
    gpus = [g for g in hw.nvidia_gpus if g.compute] or list(hw.nvidia_gpus)
    gpu = max(gpus, key=lambda g: g.compute or (0, 0)) if gpus else None
    name = gpu.name if gpu else "NVIDIA GPU"
    if hw.nvidia_cuda is None:
        return TorchChoice(
            CPU_BUILD,
            f"{name} found, but its driver does not say which CUDA "
            "it supports (nvidia-smi missing or too old): the CPU build. Update "
            "the NVIDIA driver and run the installer again to use the GPU.",
        )
    fits = [
        b
        for b in CUDA_BUILDS
        if gpu is None or gpu.compute is None or b.oldest_gpu <= gpu.compute <= b.newest_gpu
    ]
    if not fits:
        cc = _v(gpu.compute) if gpu and gpu.compute else "?"
        return TorchChoice(
            CPU_BUILD,
            f"{name} (compute capability {cc}) is not supported by "
            "any CUDA build of this PyTorch: the CPU build.",
        )
    driver = hw.nvidia_cuda
    exact = [b for b in fits if b.cuda <= driver]
    if exact:
        build = exact[0]
        return TorchChoice(
            build.tag,
            f"{name} with a driver for CUDA {_v(driver)}: the CUDA {_v(build.cuda)} build.",
        )
    # CUDA's minor version compatibility: a 12.x build runs on any 12.x driver
    same_major = [b for b in fits if b.cuda[0] == driver[0]]
    if same_major:
        build = same_major[-1]
        return TorchChoice(
            build.tag,
            f"{name} with a driver for CUDA {_v(driver)}: the CUDA "
            f"{_v(build.cuda)} build (runs through CUDA's minor version "
            "compatibility).",
            notes=(f"An NVIDIA driver for CUDA {_v(build.cuda)} or newer is recommended.",),
        )
    oldest = fits[-1]
    return TorchChoice(
        CPU_BUILD,
        f"{name} found, but its driver supports CUDA {_v(driver)} "
        f"and PyTorch needs CUDA {_v(oldest.cuda)} or newer: the CPU build. "
        "Update the NVIDIA driver and run the installer again to use the GPU.",
    )


def _choose_rocm(hw: Hardware) -> TorchChoice:
    name = hw.amd_gpus[0] if hw.amd_gpus else "AMD GPU"
    if hw.system != "linux" or hw.machine != "x86_64":
        return TorchChoice(
            CPU_BUILD,
            f"{name} found, but PyTorch's ROCm builds are for x86-64 Linux only: the CPU build.",
        )
    if not hw.rocm_runtime and hw.rocm is None:
        return TorchChoice(
            CPU_BUILD,
            f"{name} found, but ROCm is not installed: the CPU "
            "build. Install ROCm (https://rocm.docs.amd.com, `amdgpu-install "
            "--usecase=rocm`) and run the installer again to use the GPU.",
        )
    if hw.rocm is None:
        tag = ROCM_BUILDS[0][0]
        return TorchChoice(tag, f"{name} with ROCm: the {tag} build.")
    older = [(tag, v) for tag, v in ROCM_BUILDS if v <= hw.rocm]
    if older:
        tag = older[0][0]
        return TorchChoice(tag, f"{name} with ROCm {_v(hw.rocm)}: the {tag} build.")
    tag = ROCM_BUILDS[-1][0]
    return TorchChoice(
        tag,
        f"{name} with ROCm {_v(hw.rocm)}: the {tag} build, the oldest there is.",
        notes=(f"ROCm {_v(ROCM_BUILDS[-1][1])} or newer is recommended.",),
    )


def choice_for_variant(variant: str) -> TorchChoice:
    """A choice the person made (--torch-variant), checked against the known variants."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown PyTorch variant {variant!r}; known: {', '.join(VARIANTS)}")
    return TorchChoice(variant, f"the {variant} build, as asked.")


# --- requirement lines ------------------------------------------------------------------------


def read_pins(path: Path) -> dict[str, str]:
    """`name==version` lines of a requirements file (comments and options skipped)."""
    pins: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*==\s*([^\s;]+)", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def variant_requirements(pins: dict[str, str], variant: str) -> list[str]:
    """The pins with the variant's local version (torch==2.9.0+cu128), so pip replaces a build
    of another variant instead of calling it satisfied; plain pins for the default index."""
    label = "" if variant == DEFAULT_BUILD else f"+{variant}"
    return [f"{name}=={version.split('+', 1)[0]}{label}" for name, version in pins.items()]


# --- reading the tools' output (pure) ---------------------------------------------------------


def parse_nvidia_smi(text: str) -> Version | None:
    """The CUDA version in nvidia-smi's header ("CUDA Version: 12.8")."""
    match = re.search(r"CUDA Version\s*:\s*(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_nvidia_gpus(csv: str) -> tuple[NvidiaGpu, ...]:
    """`nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader` lines."""
    gpus = []
    for line in csv.splitlines():
        if not line.strip() or "not a valid field" in line.lower():
            continue
        name, _, cap = line.rpartition(",")
        if not name:
            name, cap = cap, ""
        match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", cap)
        compute = (int(match.group(1)), int(match.group(2))) if match else None
        gpus.append(NvidiaGpu(name.strip() if match else line.strip(), compute))
    return tuple(gpus)


def parse_rocminfo(text: str) -> tuple[str, ...]:
    """The GPU agents' targets in rocminfo's output (gfx1100, ...); CPUs are agents too."""
    return tuple(dict.fromkeys(re.findall(r"^\s*Name:\s*(gfx[0-9a-f]+)\s*$", text, re.M)))


def parse_rocm_version(text: str) -> Version | None:
    """/opt/rocm/.info/version ("6.4.1-83")."""
    match = re.match(r"\s*(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_lspci(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(AMD GPUs, Intel GPUs) among lspci's display controllers."""
    amd, intel = [], []
    for line in text.splitlines():
        if not re.search(r"VGA compatible controller|3D controller|Display controller", line):
            continue
        name = line.split(": ", 1)[-1].strip()
        if re.search(r"Advanced Micro Devices|AMD/ATI", name):
            amd.append(name)
        elif name.startswith("Intel"):
            intel.append(name)
    return tuple(amd), tuple(intel)


def parse_windows_gpus(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(AMD GPUs, Intel GPUs) among Win32_VideoController names, one a line."""
    names = [n.strip() for n in text.splitlines() if n.strip()]
    amd = tuple(n for n in names if re.search(r"\bAMD\b|Radeon", n))
    intel = tuple(n for n in names if n.startswith("Intel"))
    return amd, intel


def normalise_machine(machine: str) -> str:
    m = machine.lower()
    if m in ("amd64", "x86_64", "x64", "i686", "x86"):
        return "x86_64"
    if m in ("arm64", "aarch64", "armv8", "armv8l"):
        return "arm64"
    return m


def system_name(platform: str) -> str:
    if platform.startswith("win"):
        return "windows"
    return "darwin" if platform == "darwin" else "linux"


# --- probing (runs the tools) -----------------------------------------------------------------

Runner = Callable[[list[str]], str | None]


def run_tool(cmd: list[str], timeout: float = 20.0) -> str | None:
    """The tool's standard output, or None when it is missing or fails."""
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).is_file():
        return None
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, errors="replace"
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def probe_hardware(platform: str | None = None, run: Runner = run_tool) -> Hardware:
    """Ask the vendors' tools what this machine has."""
    platform = platform or sys.platform
    system = system_name(platform)
    machine = normalise_machine(_platform.machine())
    if system == "darwin":
        translated = (run(["sysctl", "-n", "sysctl.proc_translated"]) or "").strip() == "1"
        return Hardware(system, machine, rosetta=translated)
    smi = "nvidia-smi"
    if system == "windows" and shutil.which(smi) is None:
        fallback = Path(r"C:\Windows\System32\nvidia-smi.exe")
        smi = str(fallback) if fallback.is_file() else smi
    header = run([smi]) or ""
    gpus = run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"]) or ""
    if not gpus and header:
        gpus = run([smi, "--query-gpu=name", "--format=csv,noheader"]) or ""
    amd: tuple[str, ...] = ()
    intel: tuple[str, ...] = ()
    rocm = None
    rocm_agents: tuple[str, ...] = ()
    if system == "linux":
        rocm_agents = parse_rocminfo(run(["rocminfo"]) or "")
        if not rocm_agents and Path("/opt/rocm/bin/rocminfo").is_file():
            rocm_agents = parse_rocminfo(run(["/opt/rocm/bin/rocminfo"]) or "")
        version_file = Path("/opt/rocm/.info/version")
        if version_file.is_file():
            rocm = parse_rocm_version(version_file.read_text(errors="replace"))
        amd, intel = parse_lspci(run(["lspci"]) or "")
    elif system == "windows":
        names = (
            run(
                [
                    "powershell",
                    "-NoProfile",
                    "-Command",
                    "(Get-CimInstance Win32_VideoController).Name",
                ]
            )
            or ""
        )
        amd, intel = parse_windows_gpus(names)
    return Hardware(
        system,
        machine,
        nvidia_cuda=parse_nvidia_smi(header),
        nvidia_gpus=parse_nvidia_gpus(gpus),
        amd_gpus=rocm_agents or amd,
        rocm=rocm,
        rocm_runtime=bool(rocm_agents),
        intel_gpus=intel,
    )
