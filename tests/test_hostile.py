"""Checkpoints and run folders are data, never code (GitHub issue 24): every file of tests/hostile_corpus.py
through every entry point that reads it.

Entry points: the APIs ``spikeyolo.load_checkpoint``, ``spikeyolo.Detector.load`` and (reference-format files)
``spikeyolo.load_reference_weights``; the commands spikeyolo-eval, -predict, -energy, -export, -convert, fine-tuning
``spikeyolo-train model.weights=X`` and resuming ``spikeyolo-train run_dir=RUN trainer.resume=true``.

Each (file, entry point) runs in a process of its own, forked from one driver process (this file run as a script:
torch, spikeyolo and the commands are imported once; a fresh Python per case would cost ~8 s of imports), under an
address-space limit (:data:`MEMORY_LIMIT` above what the driver maps after its imports), a CPU-time limit and a
wall-clock timeout, in an empty working directory that holds every output folder of the command. A hostile file
passes when:

* the MARKER file of the corpus never appears and no canary module was imported (nothing ran);
* the exit code is 2 (an API: a ``spikeyolo.errors.InputError``), not a signal, a timeout or a traceback;
* stdout and stderr hold no traceback, and stderr is exactly one line, ``error: ...``, of at most
  :data:`MAX_LINE` characters;
* the working directory is still empty (a refused command leaves no output folder; docs/reliability.md), and a
  resumed run folder is unchanged.

The genuine files of the corpus go through the same harness and must exit 0 (one control per entry point), so
the harness itself can fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

import hostile_corpus as corpus

ROOT = Path(__file__).resolve().parents[1]
MEMORY_LIMIT = 2 << 30        # bytes of address space a case may map above the driver's
MAX_LINE = 500                # characters of the one error line
HOSTILE_CPU_S = 10            # CPU seconds a refusal may take (then SIGXCPU)
GENUINE_CPU_S = 120           # a control runs the command for real
PARALLEL = 2                  # cases running at once

API = ("load_checkpoint", "Detector.load", "load_reference_weights")
COMMANDS = ("eval", "predict", "energy", "export", "convert", "finetune", "resume")
ENTRY_POINTS = API + COMMANDS
CHECKPOINT_ENTRIES = tuple(entry for entry in ENTRY_POINTS if entry not in ("load_reference_weights", "resume"))
# the genuine file each entry point must accept
CONTROLS = {"load_checkpoint": "genuine", "Detector.load": "genuine", "load_reference_weights": "genuine_reference",
            "eval": "genuine", "predict": "genuine", "energy": "genuine", "export": "genuine",
            "convert": "genuine_tiny_yolo", "finetune": "genuine", "resume": "genuine_run"}
# overrides that make a command cheap (the embedded trees set, 64 px, one thread, no progress bars)
FINETUNE = ["experiment=demo", "model.width_multiple=0.0625", "data.imgsz=64", "trainer.epochs=1",
            "trainer.batch_size=8", "trainer.workers=0", "trainer.device=cpu", "trainer.max_minutes=null",
            "trainer.close_mosaic=0", "logger=none", "optim.warmup_epochs=1", "optim.warmup_min_iters=2",
            "trainer.progress=false"]


def entry_points(case: corpus.Case) -> tuple[str, ...]:
    """The entry points that read ``case``'s file, and ``live`` (the payload alone must run) where it has one."""
    live = ("live",) if case.live is not None else ()
    if case.genuine:
        return tuple(entry for entry, control in CONTROLS.items() if control == case.id)
    if case.kind == "run":
        return ("resume", *live)
    if case.kind == "reference":
        return (*CHECKPOINT_ENTRIES, "load_reference_weights")
    return (*(case.entries or CHECKPOINT_ENTRIES), *live)


PAIRS = [(case.id, entry) for case in corpus.CASES for entry in entry_points(case)]


@dataclass
class Job:
    case: str
    entry: str
    path: str           # the corpus file (or run folder)
    cwd: str            # an empty working directory (every output folder is in it)
    genuine: bool


@dataclass
class Outcome:
    case: str
    entry: str
    code: int | None             # exit code (None: killed by a signal)
    signal: int | None
    timed_out: bool
    seconds: float
    stdout: str
    stderr: str
    marker: bool                 # the MARKER file appeared
    canaries: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)      # files left in the working directory
    run_changed: list[str] = field(default_factory=list)  # files of the resumed run folder changed


# ----------------------------------------------------------------------------- the child: one case


def arguments(job: Job, image: str) -> list[str]:
    """The command line of a command entry point."""
    cwd, path = Path(job.cwd), job.path
    return {
        "eval": [f"checkpoint={path}", f"run_dir={cwd / 'out'}", "device=cpu", "batch_size=4"],
        "predict": [f"checkpoint={path}", f"source={image}", f"out={cwd / 'out'}", "device=cpu", "progress=false"],
        "energy": [f"checkpoint={path}", f"run_dir={cwd / 'out'}", "num_images=1", "plots=false"],
        "export": [f"checkpoint={path}", f"run_dir={cwd / 'out'}", "check=false"],
        "convert": [f"checkpoint={path}", f"output={cwd / 'out' / 'snn.pt'}", "calibration.images=4",
                    "calibration.batch_size=4", "timesteps=4", "time_chunk=4"],
        "finetune": [*FINETUNE, f"model.weights={path}", f"run_dir={cwd / 'run'}"],
        "resume": [f"run_dir={path}", "trainer.resume=true", "trainer.epochs=2"],   # one epoch more than it has
    }[job.entry]


def run_api(job: Job) -> int:
    """An API entry point: 0, or 2 with ``error: <message>`` for an InputError (anything else raises)."""
    import spikeyolo
    from spikeyolo.errors import InputError

    try:
        if job.entry == "load_checkpoint":
            spikeyolo.load_checkpoint(job.path)
        elif job.entry == "Detector.load":
            spikeyolo.Detector.load(job.path)
        else:
            from conftest import tiny_model
            spikeyolo.load_reference_weights(tiny_model("n", num_classes=1), job.path)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def run_live(job: Job) -> int:
    """The hostile node of ``job.case`` instantiated on its own (it must write MARKER or import a canary)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    try:
        instantiate(OmegaConf.create(corpus.BY_ID[job.case].live))
    except Exception as err:  # noqa: BLE001 - what it did before failing is what counts
        print(f"error: {type(err).__name__}", file=sys.stderr)
    return 0


def run_command(job: Job, image: str) -> int:
    import importlib

    module = "train" if job.entry in ("finetune", "resume") else job.entry
    main = importlib.import_module(f"spikeyolo.cli.{module}").main
    sys.argv = [f"spikeyolo-{module}", *arguments(job, image)]
    try:
        main()
    except SystemExit as exit_:
        return 0 if exit_.code is None else exit_.code if isinstance(exit_.code, int) else 1
    return 0


def child(job: Job, image: str, base_vm: int) -> None:
    """Run ``job`` in this (forked) process and leave with its exit code; never returns."""
    import resource
    import signal
    import traceback

    code = 1
    try:
        os.chdir(job.cwd)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            handle = os.open(Path(job.cwd).parent / f"{Path(job.cwd).name}.{name}", os.O_WRONLY | os.O_CREAT
                             | os.O_TRUNC)
            os.dup2(handle, fd)
            os.close(handle)
        cpu = GENUINE_CPU_S if job.genuine else HOSTILE_CPU_S
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        resource.setrlimit(resource.RLIMIT_AS, (base_vm + MEMORY_LIMIT, base_vm + MEMORY_LIMIT))
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        import torch
        torch.set_num_threads(1)
        code = run_api(job) if job.entry in API else run_live(job) if job.entry == "live" else \
            run_command(job, image)
    except BaseException:  # noqa: BLE001 - reported as the traceback it is
        traceback.print_exc()
        code = 1
    finally:
        try:
            imported = [name for name in corpus.CANARY_MODULES if name in sys.modules]
            Path(f"{job.cwd}.canaries").write_text(json.dumps(imported))
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


# ----------------------------------------------------------------------------- the driver: every case


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _virtual_memory() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def prepare(root: Path, pairs: list[tuple[str, str]]) -> tuple[list[Job], str]:
    """Write the corpus and one empty working directory per pair (a resumed run: its own copy of the folder)."""
    import shutil

    from spikeyolo.data import embedded_root

    files = corpus.make_corpus(root / "corpus", sorted({case for case, _ in pairs}))
    image = str(min((embedded_root() / "images" / "val").iterdir()))
    jobs = []
    for case, entry in pairs:
        cwd = root / "work" / f"{case}__{entry.replace('.', '_')}"
        cwd.mkdir(parents=True)
        path = files[case]
        if entry == "resume":
            path = shutil.copytree(path, root / "runs" / case)
        jobs.append(Job(case, entry, str(path), str(cwd), corpus.BY_ID[case].genuine))
    return jobs, image


def finish(job: Job, status: int | None, timed_out: bool, seconds: float, before: dict) -> Outcome:
    cwd = Path(job.cwd)
    out = Path(f"{job.cwd}.stdout").read_text(errors="replace") if Path(f"{job.cwd}.stdout").exists() else ""
    err = Path(f"{job.cwd}.stderr").read_text(errors="replace") if Path(f"{job.cwd}.stderr").exists() else ""
    canaries = Path(f"{job.cwd}.canaries")
    signal_ = os.WTERMSIG(status) if status is not None and os.WIFSIGNALED(status) else None
    code = os.WEXITSTATUS(status) if status is not None and os.WIFEXITED(status) else None
    left = sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*"))
    changed = []
    if job.entry == "resume":
        after = _snapshot(Path(job.path))
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return Outcome(job.case, job.entry, code, signal_, timed_out, round(seconds, 2), out[-4000:], err[-4000:],
                   (cwd / corpus.MARKER).exists(),
                   json.loads(canaries.read_text()) if canaries.exists() else [], left, changed)


def drive(root: Path, pairs: list[tuple[str, str]], parallel: int = PARALLEL) -> dict:
    """Run every pair, ``parallel`` at a time, each in a forked child; the outcomes and the seconds taken."""
    import importlib
    import signal

    import torch

    for module in ("convert", "energy", "eval", "export", "predict", "train"):   # imported once, before the forks
        importlib.import_module(f"spikeyolo.cli.{module}")

    torch.set_num_threads(1)
    start = time.perf_counter()
    # the corpus is written by a child too: a torch op run here would start an OpenMP thread pool, and a child
    # forked after that waits forever on the pool's threads, which it does not have
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            jobs, image = prepare(root, pairs)
            (root / "jobs.json").write_text(json.dumps({"image": image, "jobs": [asdict(job) for job in jobs]}))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError(f"writing the corpus failed (status {status})")
    written = json.loads((root / "jobs.json").read_text())
    jobs, image = [Job(**job) for job in written["jobs"]], written["image"]
    prepared = time.perf_counter() - start
    base_vm = _virtual_memory()
    pending, running, outcomes = list(jobs), {}, []
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            before = _snapshot(Path(job.path)) if job.entry == "resume" else {}
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                child(job, image, base_vm)
            running[pid] = (job, time.perf_counter(), before)
        pid, status = os.waitpid(-1, os.WNOHANG)
        now = time.perf_counter()
        if pid == 0:
            for other, (job, began, before) in list(running.items()):
                limit = 3 * (GENUINE_CPU_S if job.genuine else HOSTILE_CPU_S)
                if now - began > limit:
                    os.kill(other, signal.SIGKILL)
                    os.waitpid(other, 0)
                    del running[other]
                    outcomes.append(finish(job, None, True, now - began, before))
            time.sleep(0.02)
            continue
        job, began, before = running.pop(pid)
        outcomes.append(finish(job, status, False, now - began, before))
    return {"seconds": round(time.perf_counter() - start, 1), "prepare_seconds": round(prepared, 1),
            "outcomes": [asdict(outcome) for outcome in outcomes]}


# ----------------------------------------------------------------------------- the checks


def problems(outcome: dict, genuine: bool) -> list[str]:
    """What is wrong with one outcome (empty: it passes)."""
    if outcome["entry"] == "live":
        return [] if outcome["marker"] or outcome["canaries"] else \
            [f"the payload alone wrote no {corpus.MARKER} and imported no canary: the case tests nothing"]
    found = []
    if outcome["marker"]:
        found.append(f"code ran: {corpus.MARKER} was written")
    if outcome["canaries"]:
        found.append(f"code ran: imported {', '.join(outcome['canaries'])}")
    if outcome["timed_out"]:
        found.append(f"timed out after {outcome['seconds']} s")
    if outcome["signal"] is not None:
        found.append(f"killed by signal {outcome['signal']} (SIGXCPU 24: CPU limit; SIGSEGV 11; SIGKILL 9)")
    for name in ("stdout", "stderr"):
        if "Traceback (most recent call last)" in outcome[name]:
            last = [line for line in outcome[name].splitlines() if line.strip()][-1:]
            found.append(f"traceback on {name}: {last[0][:300] if last else ''}")
    if genuine:
        if outcome["code"] != 0:
            found.append(f"exit code {outcome['code']}: {outcome['stderr'][-500:]}")
        return found
    lines = [line for line in outcome["stderr"].splitlines() if line.strip()]
    if outcome["code"] is not None and outcome["code"] != 2:
        found.append(f"exit code {outcome['code']} (not 2)")
    if outcome["code"] is not None and (len(lines) != 1 or not lines[0].startswith("error: ")):
        found.append(f"stderr is not one 'error:' line ({len(lines)} lines): {outcome['stderr'][-300:]!r}")
    elif lines and len(lines[0]) > MAX_LINE:
        found.append(f"error line of {len(lines[0])} characters: {lines[0][:200]}...")
    if outcome["left"]:
        found.append(f"left files in the working directory: {outcome['left'][:5]}")
    if outcome["run_changed"]:
        found.append(f"changed the run folder: {outcome['run_changed'][:5]}")
    return found


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory) -> dict[tuple[str, str], dict]:
    """Every selected pair (``-k`` selects) run once by the driver (one subprocess: this file as a script)."""
    root = tmp_path_factory.mktemp("hostile")
    selected = [f"{item.callspec.params['case']}:{item.callspec.params['entry']}" for item in request.session.items
                if getattr(item, "originalname", None) == "test_hostile_file_is_refused"]
    env = {**{k: v for k, v in os.environ.items() if k != "SPIKEYOLO_DEBUG"}, "CUDA_VISIBLE_DEVICES": "",
           "OMP_NUM_THREADS": "1", "SPIKEYOLO_CACHE": str(root / "cache"), "WANDB_MODE": "offline",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, __file__, str(root), *selected], env=env, cwd=root,
                            capture_output=True, text=True, timeout=1200, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((root / "results.json").read_text())
    print(f"\nhostile corpus: {len(report['outcomes'])} cases in {report['seconds']} s "
          f"(corpus written in {report['prepare_seconds']} s)")
    return {(o["case"], o["entry"]): o for o in report["outcomes"]}


@pytest.mark.parametrize("case,entry", PAIRS, ids=[f"{case}-{entry}" for case, entry in PAIRS])
def test_hostile_file_is_refused(case, entry, outcomes):
    """A hostile file: refused with one line and nothing run; a genuine one: accepted; ``live``: the payload
    alone runs (so its refusal means something)."""
    genuine = corpus.BY_ID[case].genuine
    found = problems(outcomes[(case, entry)], genuine)
    assert not found, f"{case} ({corpus.BY_ID[case].attack}) through {entry}: " + "; ".join(found)


if __name__ == "__main__":   # the driver: python tests/test_hostile.py ROOT [CASE:ENTRY ...]
    folder = Path(sys.argv[1])
    chosen = [tuple(arg.split(":", 1)) for arg in sys.argv[2:]] or PAIRS
    report = drive(folder, [(case, entry) for case, entry in chosen])
    (folder / "results.json").write_text(json.dumps(report, indent=1))
