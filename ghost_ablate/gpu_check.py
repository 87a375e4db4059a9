"""`ghost-ablate gpu-check` (`make gpu-check`, issue 41): the GPU path checked in one command before
the first GPU-hours are spent on it. Each part runs the project's own commands (in a child process,
with a time limit, so one failure or hang is reported and the rest still run) and says what it saw;
parts that need CUDA are skipped, in one line, on a machine without it. Where CUDA is present the
parts are written to reports/gpu-check.md with the machine they came from.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CHILD_TIMEOUT_S = 150  # one part's command; the whole check stays under 8 minutes on one GPU
MEMORY_RATIO = 1.5  # the dry-run's calibrated peak must lie within this factor of a run's measured one


@dataclass(frozen=True)
class Part:
    title: str
    needs_gpu: bool
    run: Callable[[Path], list[str]]  # markdown lines; raises CheckFailed (or anything) on failure


class CheckFailed(RuntimeError):
    pass


def cli(*args: str, env: dict[str, str] | None = None, timeout: int = CHILD_TIMEOUT_S) -> str:
    """Run `ghost-ablate ARGS` in a child process; its output, or CheckFailed with its last lines."""
    code = "import sys; from ghost_ablate.cli import main; sys.exit(main(sys.argv[1:]))"
    try:
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"`ghost-ablate {' '.join(args)}` did not finish within {timeout} s") from None
    if done.returncode != 0:
        tail = " / ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        raise CheckFailed(f"`ghost-ablate {' '.join(args)}` exited {done.returncode}: {tail}")
    return done.stdout


def descriptor_probe(batch: int = 512, limit: int = 1024, images: int = 2048) -> str:
    """Encoded images through the loader with 2 workers at `batch` under `ulimit -n limit` (the
    sharing strategy that spends a descriptor per tensor), in a child process so the limit binds
    only there; the line it printed, or CheckFailed."""
    script = textwrap.dedent(f"""
        import resource, torch
        resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))
        torch.multiprocessing.set_sharing_strategy("file_descriptor")
        from ghost_ablate.data.imagenet import collate

        class Blobs(torch.utils.data.Dataset):
            def __len__(self): return {images}
            def __getitem__(self, i): return torch.full((200 + i % 50,), i % 251, dtype=torch.uint8), i % 10, str(i)

        loader = torch.utils.data.DataLoader(Blobs(), batch_size={batch}, num_workers=2, collate_fn=collate,
                                             timeout=60, prefetch_factor=4)
        print(sum(len(b[0]) for b in loader))
    """)
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"the loader hung at batch {batch} under ulimit -n {limit}") from None
    if done.returncode != 0 or done.stdout.strip() != str(images):
        raise CheckFailed(f"batch {batch} under ulimit -n {limit}: {done.stderr.strip().splitlines()[-1:]}")
    return f"{images} encoded images in batches of {batch} through 2 workers under `ulimit -n {limit}`: all arrived"


def environment(_: Path) -> list[str]:
    import torch

    from .machine import describe_device
    from .precision import resolve_precision

    driver = Path("/proc/driver/nvidia/version")
    lines = [f"- CPU: {describe_device('cpu')}; Python {platform.python_version()}; torch {torch.__version__} "
             f"(CUDA build {torch.version.cuda or 'none'})",
             f"- NVIDIA driver: {driver.read_text().splitlines()[0] if driver.exists() else 'none loaded'}"]
    if torch.cuda.is_available():
        cap = torch.cuda.get_device_capability()
        lines.append(f"- GPU: {torch.cuda.device_count()} x {torch.cuda.get_device_name()} (compute capability "
                     f"{cap[0]}.{cap[1]})")
    for device in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
        p = resolve_precision("auto", device)
        lines.append(f"- `--precision auto` on {device}: {p.resolved} ({p.reason})")
    return lines


def descriptors(_: Path) -> list[str]:
    return [f"- {descriptor_probe()}"]


def bench(work: Path) -> list[str]:
    import pandas as pd

    cli("bench", "--device", "cuda", "--cifar-only", "--out", str(work / "bench_cuda.csv"), "--repeats", "10")
    gpu = pd.read_csv(work / "bench_cuda.csv")
    cpu_csv = Path(__file__).resolve().parents[1] / "results" / "bench.csv"
    cpu = pd.read_csv(cpu_csv) if cpu_csv.is_file() else None
    lines = ["| model | GPU train img/s | GPU eval img/s | GPU peak MB (warm step) | CPU train img/s (results/bench.csv) |",
             "|---|---|---|---|---|"]
    for _, r in gpu.iterrows():
        same = cpu[(cpu["model"] == r["model"])] if cpu is not None else None
        cpu_rate = f"{same['train_img_s'].iloc[0]:.0f}" if same is not None and len(same) else ""
        lines.append(f"| {r['model']} s={r.get('ratio', '')} d={r.get('dw_size', '')} | {r['train_img_s']:.0f} | "
                     f"{r['eval_img_s']:.0f} | {r['train_peak_mem_mb']:.0f} | {cpu_rate} |")
    return lines


def _records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("**/result.json"))]


def cifar_training(work: Path) -> list[str]:
    from .data.cifar import CIFAR10, write_folder

    data = write_folder(work / "cifar", CIFAR10, 2048, 512)
    lines = []
    for label, extra in (("fp32", ["--precision", "32"]), ("auto", []), ("compile", ["--set", "recipe.compile=true"])):
        out = work / f"cifar-{label}"
        cli("train", "--model", "ghost_resnet56", "--ratio", "2", "--dw-size", "3", "--profile", "smoke", "--epochs",
            "2", "--limit-train-batches", "16", "--data-dir", str(data), "--no-download", "--accelerator", "cuda",
            "--out", str(out), *extra)
        (rec,) = _records(out)
        losses = [h["train_loss"] for h in rec["history"]]
        if not rec["device"].startswith("cuda") or not losses[-1] < losses[0]:
            raise CheckFailed(f"{label}: device {rec['device']}, training loss {losses}")
        lines.append(f"- {label}: {rec['device']}, precision {rec['precision']['resolved']}, training loss "
                     f"{losses[0]:.3f} -> {losses[-1]:.3f}, {rec['train_images_per_s']:.0f} img/s")
    return lines


def ddp(work: Path) -> list[str]:
    import torch

    from .data.cifar import CIFAR10, write_folder

    devices = min(torch.cuda.device_count(), 2)
    data = write_folder(work / "cifar-ddp", CIFAR10, 1024, 256)
    out = work / "ddp"
    cli("train", "--model", "resnet56", "--profile", "smoke", "--data-dir", str(data), "--no-download",
        "--accelerator", "cuda", "--devices", str(devices), "--set", "recipe.sync_batchnorm=true", "--out", str(out))
    (rec,) = _records(out)
    return [f"- {devices} rank(s), NCCL, SyncBN: {rec['status']}, {rec.get('distributed', 'one process')}"]


def imagenet_input(work: Path) -> list[str]:
    """CPU decode, nvJPEG + the batch crop, and DALI (mixed) on the same files at the evaluation
    crop (no randomness): mean absolute difference per pixel against the CPU's, and images/s."""
    import torch

    from .data.dali import DaliBatches
    from .data.decode import Crops, crop_batch
    from .data.imagenet import PackedBlobs, crop_one, decode_blobs
    from .data.imagenet_sample import write_sample

    root = work / "imagenet"
    write_sample(root, classes=4, per_class=16, val_per_class=1, size=256)
    files = sorted((root / "train").glob("*/*"))
    blobs = [f.read_bytes() for f in files]
    crops = Crops(224, False)
    start = time.perf_counter()
    cpu = torch.stack([crop_one(b, crops) for b in blobs])
    rates = {"CPU (workers' decode)": len(blobs) / (time.perf_counter() - start)}
    device = torch.device("cuda")
    packed = PackedBlobs.pack([torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs])
    torch.cuda.synchronize()
    start = time.perf_counter()
    decoded = decode_blobs(packed.unpack(), device)
    sizes = torch.tensor([[x.shape[2], x.shape[1]] for x in decoded])
    boxes, flips = crops.boxes(sizes[:, 0], sizes[:, 1])
    nv = crop_batch(decoded, boxes, 224, flips)
    torch.cuda.synchronize()
    rates["nvJPEG + batch crop"] = len(blobs) / (time.perf_counter() - start)
    diffs = {"nvJPEG + batch crop": (nv.cpu().float() - cpu.float()).abs().mean().item()}
    dali = DaliBatches([(str(f), 0) for f in files], crops, len(files), 0, 1, 0, device)
    start = time.perf_counter()
    (images, *_), = list(dali)
    torch.cuda.synchronize()
    rates["DALI (mixed)"] = len(blobs) / (time.perf_counter() - start)
    diffs["DALI (mixed)"] = (images.cpu().float() - cpu.float()).abs().mean().item()
    lines = ["| reader | images/s (one batch, first call included) | mean abs diff vs CPU (0-255) |", "|---|---|---|"]
    for name, rate in rates.items():
        lines.append(f"| {name} | {rate:.0f} | {diffs.get(name, 0.0):.2f} |")
    worst = max(diffs.values())
    if worst > 8.0:  # IDCT and resize differ by a few levels; a wrong crop or colour order by tens
        raise CheckFailed(f"crops differ from the CPU's by {worst:.1f} levels on average")
    return lines


def ghostnet_shards(work: Path) -> list[str]:
    from .data.imagenet_sample import write_sample

    root = work / "ilsvrc"
    truth = write_sample(root, classes=4, per_class=24, val_per_class=4, size=256)
    cli("imagenet", "sort-val", str(root / "val"), "--ground-truth", str(truth))
    cli("imagenet", "shard", str(root), str(work / "shards"), "--per-shard", "32")
    lines = []
    for decoder in ("workers", "device", "dali"):
        out = work / f"ghostnet-{decoder}"
        cli("train", "--model", "ghostnet", "--dataset", "imagenet", "--data-dir", str(work / "shards"), "--profile",
            "imagenet_smoke", "--set", "recipe.image_size=224", "--accelerator", "cuda", "--out", str(out),
            env={"GHOST_ABLATE_DECODE": decoder})
        (rec,) = _records(out)
        lines.append(f"- {decoder}: {rec['status']}, {rec['optimizer_steps']} steps at 224 px, "
                     f"{rec['train_images_per_s']:.0f} img/s")
    return lines


def memory(work: Path) -> list[str]:
    from .config import RunConfig
    from .data.cifar import CIFAR10, write_folder
    from .estimate import measure_calibration
    from .precision import resolve_precision

    data = write_folder(work / "cifar-mem", CIFAR10, 1024, 256)
    rc = RunConfig.create("ghost_vgg16", 2, 3, profile="smoke", batch_size=256)
    predicted = measure_calibration(rc, "cuda", resolve_precision(rc.recipe.precision, "cuda"), accumulate=2).peak_bytes
    out = work / "memory"
    cli("train", "--model", "ghost_vgg16", "--ratio", "2", "--dw-size", "3", "--profile", "smoke", "--batch-size",
        "256", "--accumulate", "2", "--data-dir", str(data), "--no-download", "--accelerator", "cuda", "--out", str(out))
    (rec,) = _records(out)
    ratio = rec["peak_memory_bytes"] / predicted
    line = (f"- Ghost-VGG-16 batch 256, --accumulate 2: calibrated {predicted / 2**20:.0f} MB, measured "
            f"{rec['peak_memory_bytes'] / 2**20:.0f} MB (ratio {ratio:.2f}; within {MEMORY_RATIO}x required)")
    if not 1 / MEMORY_RATIO <= ratio <= MEMORY_RATIO:
        raise CheckFailed(line)
    return [line]


PARTS = (Part("Environment and `--precision auto`", False, environment),
         Part("Loader descriptors at batch 512 under `ulimit -n 1024`", False, descriptors),
         Part("`bench --device cuda`: the paper's CIFAR models", True, bench),
         Part("A short CIFAR training: fp32, auto, recipe.compile", True, cifar_training),
         Part("DDP with NCCL and SyncBN", True, ddp),
         Part("ImageNet input: CPU decode, nvJPEG, DALI on the same files", True, imagenet_input),
         Part("GhostNet at 224 px from shards: workers, nvJPEG, DALI", True, ghostnet_shards),
         Part("Calibrated memory against a run's measured peak", True, memory))


def run_check(out: Path | None, cuda: bool | None = None, parts: tuple[Part, ...] = PARTS) -> tuple[int, str]:
    """Run every part this machine can (all of them with CUDA); (failed parts, the report's text).
    Writes the report to `out` when given."""
    import torch

    from .machine import describe_device

    cuda = torch.cuda.is_available() if cuda is None else cuda
    where = describe_device("cuda") if cuda else describe_device("cpu")
    sections, failed = [f"# GPU check ({time.strftime('%Y-%m-%d')})", "", f"Machine: {where}.", ""], 0
    if not cuda:
        print("no CUDA device: torch sees none here; the parts that need no GPU run, the GPU parts are skipped")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for part in parts:
            sections += [f"## {part.title}", ""]
            if part.needs_gpu and not cuda:
                sections += ["Skipped: no CUDA device.", ""]
                continue
            start = time.perf_counter()
            try:
                lines = part.run(Path(tmp))
                status = "passed"
            except Exception as err:  # noqa: BLE001 - one part's failure is reported; the others still run
                lines, status = [f"- {type(err).__name__}: {str(err)[:800]}"], "FAILED"
                failed += 1
            sections += [*lines, "", f"{status} in {time.perf_counter() - start:.0f} s on {where}", ""]
            print(f"{part.title}: {status}")
    text = "\n".join(sections)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return failed, text
