"""The docs test (GitHub issue #21): every command and Python snippet shown in README.md and docs/*.md runs as shown,
or fails the way the docs say it must, and every ``error: ...`` the docs quote is what the code prints.

The pages are read by tests/docs_extract.py (fenced blocks, inline commands, quoted errors; a glob, so a new page is
covered). Each command is put in a class by ``CLASSES`` (the first rule that matches); a command that fits no rule
fails ``test_every_command_is_classified``, which asks its author to classify it here:

* ``run``: a ``spikeyolo-*`` command whose inputs are made here runs for real, in this process (``main()`` with
  ``sys.argv`` set, as tests/test_cli.py runs them: a subprocess costs ~8 s of imports), in one working directory
  per module (``workspace``) that holds what the docs' placeholders name (``PLACEHOLDERS``), shrunk to a tiny
  configuration by the overrides of ``SHRINK`` (appended, so they win; test_shrink_keys_are_config_keys composes
  them). It must exit 0 and leave what the command writes and what its comment promises (``-> runs/X/RUN``).
  The commands that make what other commands name (the demo runs, the converted SNN, the NIR export, the Gen1 run)
  run first, in the workspace fixture, through the same memoised runner;
* ``external``: needs data or hardware that is not here (COCO, Gen1/1Mpx folders, the reader's dataset, a GPU,
  torchrun on 4 GPUs): runs as written and must fail clearly: exit code 2, one line on stderr starting with
  ``error:`` that names what is missing, no traceback, nothing written;
* ``install`` / ``suite`` / ``docker`` / ``shell``: checked statically (extras and console scripts of
  pyproject.toml; the Dockerfile's ARGs, VOLUMEs and tags; the command a container runs is parsed);
* ``script``: ``python scripts/X.py``: the script exists, ``--help`` exits 0 and lists every option the docs use
  (scripts/kmeans_anchors.py also runs: it must print the anchors docs/conversion.md trains with);
* ``python -c`` and ``module`` (``python -m spikeyolo...``): run for real, the module shrunk.

Inline commands in the prose (```spikeyolo-eval deploy=fixed_point```) are composed with their command's config
(every key, option and type checked, nothing run); two are documented refusals (``INLINE_REFUSED``).
Python blocks run in the workspace with ``PRELUDE`` giving only the names a block uses without defining them; a
comment that promises a shape (``# [2, 240, 304, 3]``) or a parameter count is checked.
Every quoted ``error: ...`` is matched by one entry of ``QUOTES``: a trigger (the command line the doc's row names,
run here; ``...`` in the quote matches anything, the quote's placeholders such as ``/runs/x`` are replaced by the
paths of the trigger) or, where it cannot be made to happen here (as root, in a loader worker), a check that the
message is one of the f-strings in the source (its values free).
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import errno
import fnmatch
import io
import itertools
import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import cv2
import pytest
import torch
import yaml

import reference_fakes as fakes
import spikeyolo
from conftest import FIXTURES, randomize_bn, tiny_model, yolo_set
from docs_extract import (ROOT, Command, Quote, all_blocks, doc_pages, error_quotes, inline_commands, is_shell,
                          shell_commands)
from spikeyolo.cli.common import check_command_line, friendly_errors
from spikeyolo.data import embedded_root
from spikeyolo.data.events.synthetic import SceneConfig, write_recording
from spikeyolo.engine.sweep import sweep_points
from spikeyolo.errors import UserError
from test_reference_security import call, checkpoint as reference_payload, op_str, zip_file
from test_reliability import tiny_checkpoint

# one torch thread (conftest.one_thread); the commands' third-party warnings (the NIR importers, ultralytics,
# torch.load) are not what this test checks
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

PYPROJECT = (ROOT / "pyproject.toml").read_text()


def console_scripts() -> dict[str, str]:
    """[project.scripts] of pyproject.toml: {"spikeyolo-train": "spikeyolo.cli.train", ...}."""
    section = PYPROJECT.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([\w.]+):main"', section, flags=re.M))


SCRIPTS = console_scripts()

# --------------------------------------------------------------------------- classes

# (class, the command matches, why). The first matching rule classifies a command: the program first (docker,
# pip, python), then what a spikeyolo command needs that is not here (external: its error must name it,
# EXTERNAL_NAMES), then the spikeyolo commands that run here.
CLASSES = [
    ("docker", r"^docker (build|run) ", "no container engine runs here (docs/docker.md)"),
    ("device", r'^(run\(command="|(DEVICE=cpu |DEMO=1 )?bash scripts/gpu_)',
     "the GPU machine of the device tool and its wheels (no GPU here): the scripts are syntax-checked"),
    ("install", r"^(python3 -m venv \.venv|(\.venv/bin/)?pip install )", "a virtual environment and the package"),
    ("suite", r"^(\.venv/bin/)?python -m pytest( |$)", "this test suite (CI runs it; not from inside itself)"),
    ("shell", r"^mkdir -p [\w ./-]+$", "the folders docker run mounts"),
    ("script", r"^python3? scripts/[\w-]+\.py( |$)", "a script of the repository"),
    ("python -c", r"^python3? -c ", "Python code on the command line"),
    ("module", r"^python3? -m spikeyolo\.[\w.]+( |$)", "a command line of a package module"),
    ("external", r"^GEN[14](_RVT)?_DIR=/data/gen[14](_rvt)? ", "the Gen1 / 1 Megapixel dataset folders are not here"),
    ("external", r"\bdata=(coco|gen1|gen4|gen1_rvt|gen4_rvt)(\s|$)", "COCO, Gen1 and 1Mpx are not here"),
    ("external", r"\bdata\.(yaml|images)=(PATH|DIR)\b", "the reader's own dataset (PATH, DIR)"),
    ("external", r"\btrainer\.device=(0|cuda)\b", "a GPU"),
    ("external", r"^torchrun ", "torchrun on 4 GPUs: here rank 0's command line, run in this process"),
    ("run", rf"^(\.venv/bin/)?({'|'.join(SCRIPTS)})( |$)", "a spikeyolo command on data made here"),
]

# what the error of an external command must name, per external rule that matches it (any one of them)
EXTERNAL_NAMES = [
    (r"^GEN1_DIR=", r"/data/gen1"), (r"^GEN4_DIR=", r"/data/gen4"),
    (r"^GEN1_RVT_DIR=", r"/data/gen1_rvt"), (r"^GEN4_RVT_DIR=", r"/data/gen4_rvt"),
    (r"\bdata=coco\b", r"coco/coco\.yaml: no such file.*set COCO_DIR"),
    (r"\bdata=gen1\b", r"Gen1 dataset folder does not exist.*set GEN1_DIR"),
    (r"\bdata=gen4\b", r"Gen4 dataset folder does not exist.*set GEN4_DIR"),
    (r"\bdata\.yaml=PATH", r"data\.yaml=PATH"), (r"\bdata\.images=DIR", r"/DIR: images folder"),
    (r"\btrainer\.device=(0|cuda)", r"asks for CUDA but no GPU is available"),
]

# Placeholders of the docs -> what the workspace holds (applied in order to commands and Python blocks).
# {run_n} and {run_t}: the folders the workspace's `spikeyolo-train experiment=demo` and `... model=tiny_yolo`
# made (runs/demo_spikeyolo_n/<time>, runs/demo_tiny_yolo/<time>). The other names of the docs are files of the
# workspace under their own names: best.pt (the demo's), tree.jpg, trees/, photos/ (PNG), clip.mp4, rec_td.dat,
# train/rec_td.dat + train/rec_bbox.npy, 23M_best.pt and gen1_best.pt (reference-format checkpoints of the s
# topology at width 1/16: COCO, 80 classes; Gen1, 2 classes), best_snn_channel_ibt.pt (the converted demo Tiny
# YOLO), instances_val2017.json (the trees val annotations) and results.json (their boxes as detections).
PLACEHOLDERS = [    # (pattern, replacement, also in Python blocks)
    (r"runs/demo_spikeyolo_n/RUN\b", "{run_n}", True),
    (r"runs/demo_tiny_yolo/RUN\b", "{run_t}", True),
    (r"runs/gen1/(RUN|\.\.\.)/", "runs/g1/", True),     # the Gen1 run -> the gen1_synthetic run of docs/events.md
    (r"runs/\.\.\./weights/", "{run_t}/weights/", True),  # docs/conversion.md: the Tiny YOLO run of its step 1
    (r"\bRUN_DIR/weights/", "runs/g1/weights/", False),  # docs/events.md: a gen4 checkpoint (external: any will do)
    (r"(?<=\s)\[([^\[\]]+)\]", r"\1", False),           # [optional arguments]: given
    (r"\bout=DIR\b", "out=pred_dir", False),
    (r"\bOUT_DIR\b", "synthetic_out", False),
    (r"(?<=\s)spikeyolo/assets/trees/", str(embedded_root()) + "/", False),   # the package's own copy
    (r"(?<=source=rec_td\.dat checkpoint=)best\.pt|(?<=events=rec_td\.dat checkpoint=)best\.pt",
     "runs/g1/weights/best.pt", False),                 # next to a recording, best.pt is an event model
]
# Overrides an external command needs so that it reaches the missing data (the fakes are at width 1/16)
EXTERNAL_SHRINK = [
    (r"checkpoint=23M_best\.pt .*\bmodel=spikeyolo_s\b", ["model.width_multiple=0.0625"]),
]

# Overrides appended to make a `run` command tiny: (the command matches, overrides). Each is a real key of the
# command's config (test_shrink_keys_are_config_keys); the CLI would refuse anything else.
TRAIN_SHRINK = ["trainer.epochs=1", "data.imgsz=64", "trainer.workers=0", "trainer.device=cpu",
                "trainer.max_minutes=null", "trainer.progress=false"]
SYNTHETIC_SHRINK = ["data.synthetic.recordings={train:1,test:1}", "data.synthetic.duration_s=1.0",
                    "data.preprocess_workers=1"]
SHRINK = [
    (r"^spikeyolo-train (?!.*trainer\.resume=true)", TRAIN_SHRINK),
    # the spiking families at width 1/16; the stock YOLOv8n (ultralytics' own scales) has no width multiple
    (r"^spikeyolo-train (?!.*trainer\.resume=true)(?!.*model=yolov8)", ["model.width_multiple=0.0625"]),
    (r"^spikeyolo-train .*trainer\.resume=true", ["trainer.epochs=2"]),   # one epoch more than the run has
    (r"\b(experiment|data)=gen[14]_synthetic\b", SYNTHETIC_SHRINK),
    (r"^spikeyolo-energy ", ["num_images=2", "data.imgsz=64"]),
    (r"^spikeyolo-convert ", ["calibration.images=4"]),
    (r"^spikeyolo-predict ", ["progress=false"]),
    (r"^python3? -m spikeyolo\.data\.events\.make_synthetic ",
     ["--recordings", "1", "--duration-s", "0.6", "--splits", "test"]),
]

# what a successful run of a command leaves (any one of the globs, among the files it created)
OUTPUTS = {
    "spikeyolo-eval": ["runs/eval/*/metrics.json", "runs/eval/*/timesteps.json"],
    "spikeyolo-energy": ["runs/energy/*/energy.json"],
    "spikeyolo-export": ["runs/export/*/export.json"],
    "spikeyolo-predict": ["runs/predict/*/predictions.json", "runs/predict/*/detections.json",
                          "pred*/predictions.json", "pred*/detections.json"],
}
# README "Usage": "Every run writes RUN_DIR/config.yaml ..., weights/{last,best}.pt, metrics.json ..." (the
# plots of a model that finds nothing after one epoch may be missing: pr_curve.png)
RUN_FILES = ["config.yaml", "train.log", "metrics.jsonl", "results.csv", "weights/last.pt", "weights/best.pt",
             "metrics.json", "per_class_ap.md", "curves.png", "model_card.md"]


def classify(text: str) -> tuple[str, str] | None:
    for name, pattern, why in CLASSES:
        if re.search(pattern, text):
            return name, why
    return None


def shrink_for(text: str) -> list[str]:
    return [override for pattern, overrides in SHRINK if re.search(pattern, text) for override in overrides]


def substitute(text: str, names: dict[str, str], code: bool = False) -> str:
    for pattern, replacement, in_code in PLACEHOLDERS:
        if code and not in_code:
            continue
        try:
            text = re.sub(pattern, replacement.format(**names), text)
        except KeyError:        # a name the workspace has not made (yet): left as written
            continue
    return text


def split_command(text: str) -> tuple[list[str], dict[str, str]]:
    """(words, environment) of a command line: leading NAME=value words are its environment."""
    words, env = shlex.split(re.sub(r"^\.venv/bin/", "", text)), {}
    while words and re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return words, env


# --------------------------------------------------------------------------- what the pages show


def _commands() -> list[Command]:
    return [command for block in all_blocks() if is_shell(block) for command in shell_commands(block)]


def _grouped(kind: str) -> dict[str, list[Command]]:
    """The commands of a class, one entry per distinct command line (the README's `.venv/bin/spikeyolo-train
    experiment=demo` is `spikeyolo-train experiment=demo`), in page order."""
    groups: dict[str, list[Command]] = {}
    for command in _commands():
        if (classify(command.text) or ("?",))[0] == kind:
            groups.setdefault(re.sub(r"^\.venv/bin/", "", command.text), []).append(command)
    return groups


def _ids(groups: dict[str, list]) -> list[str]:
    """README.md:41:spikeyolo-eval (the first place a command is shown)."""
    return [f"{items[0].where}:{text.split()[0].removeprefix('.venv/bin/')}" for text, items in groups.items()]


RUN = _grouped("run")
EXTERNAL = _grouped("external")
PYTHON_BLOCKS = [block for block in all_blocks() if block.lang == "python"]
INLINE = [command for page in doc_pages() for command in inline_commands(page)]
QUOTED = [quote for page in doc_pages() for quote in error_quotes(page)]


# --------------------------------------------------------------------------- running a command in this process


@dataclass
class Result:
    code: int
    out: str
    err: str
    new: frozenset[str]        # paths (relative to the working directory) that the command created
    seconds: float


def _files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def _entry(words: list[str]) -> tuple[Callable[[], object], list[str]]:
    """The function a command line runs here and its sys.argv."""
    program, args = words[0], words[1:]
    if program in SCRIPTS:
        return __import__(SCRIPTS[program], fromlist=["main"]).main, words
    if program == "torchrun":      # rank 0 of `torchrun ... -m spikeyolo.cli.X ARGS` runs X's main with ARGS
        module = args[args.index("-m") + 1]
        return __import__(module, fromlist=["main"]).main, [f"spikeyolo-{module.rsplit('.', 1)[-1]}",
                                                             *args[args.index("-m") + 2:]]
    if program in ("python", "python3") and args[0] == "-m":
        return __import__(args[1], fromlist=["main"]).main, [args[1], *args[2:]]
    if program in ("python", "python3") and args[0] == "-c":
        return (lambda: exec(compile(args[1], "<python -c>", "exec"), {"__name__": "__main__"})), words[1:]
    if program in ("python", "python3") and args[0].endswith(".py"):
        script = ROOT / args[0]
        return (lambda: runpy.run_path(str(script), run_name="__main__")), [str(script), *args[1:]]
    raise AssertionError(f"no way to run {words!r} here")


def run_main(words: list[str], cwd: Path, env: dict[str, str], cache: Path) -> Result:
    """Run a command line in this process in ``cwd``: (exit code, stdout, stderr, new paths). CUDA is reported
    unavailable (the docs test is a CPU test on every machine); the process state a command may change is put
    back (environment, sys.path, torch threads)."""
    main, argv = _entry(words)
    before, out, err = _files(cwd), io.StringIO(), io.StringIO()
    saved_env, saved_path, threads = dict(os.environ), list(sys.path), torch.get_num_threads()
    start = time.perf_counter()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(cwd)
            patch.setattr(torch.cuda, "is_available", lambda: False)
            for name in ("SPIKEYOLO_DEBUG", "COCO_DIR", "GEN1_DIR", "GEN4_DIR", "GEN1_RVT_DIR", "GEN4_RVT_DIR"):
                patch.delenv(name, raising=False)
            patch.setenv("SPIKEYOLO_CACHE", str(cache))
            for name, value in env.items():
                patch.setenv(name, value)
            patch.setattr(sys, "argv", argv)
            sys.path.insert(0, str(ROOT / "scripts"))     # as `python scripts/X.py` has it
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    main()
                    code = 0
                except SystemExit as exit_:
                    code = 0 if exit_.code is None else exit_.code if isinstance(exit_.code, int) else 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path
        torch.set_num_threads(threads)
    return Result(code, out.getvalue(), err.getvalue(), frozenset(_files(cwd) - before),
                  time.perf_counter() - start)


@dataclass
class Workspace:
    """The module's working directory (what the docs' placeholders name) and its memoised runner: a command line
    that several pages show runs once."""

    root: Path
    cache: Path
    names: dict[str, str] = field(default_factory=dict)
    results: dict[tuple, Result] = field(default_factory=dict)
    seconds: dict[str, tuple] = field(default_factory=dict)   # the seconds a program last started and ended in
    nir: Path | None = None

    def prepare(self, text: str) -> tuple[list[str], dict[str, str]]:
        words, env = split_command(substitute(text, self.names))
        return [*words, *shrink_for(" ".join(words))], env

    def run(self, text: str, shrink: bool = True) -> Result:
        if shrink:
            words, env = self.prepare(text)
        else:
            words, env = split_command(substitute(text, self.names))
            words += [o for pattern, overrides in EXTERNAL_SHRINK if re.search(pattern, text) for o in overrides]
        key = (tuple(words), tuple(sorted(env.items())))
        if key not in self.results:
            # default run folders are named by the second (runs/eval/<time>): two runs of a command in one second
            # would share one, so the next one waits for the next second
            while time.strftime("%Y-%m-%d_%H-%M-%S") in self.seconds.get(words[0], ()):
                time.sleep(0.05)
            start = time.strftime("%Y-%m-%d_%H-%M-%S")
            self.results[key] = run_main(words, self.root, env, self.cache)
            self.seconds[words[0]] = (start, time.strftime("%Y-%m-%d_%H-%M-%S"))
        return self.results[key]

    def produce(self, text: str, pattern: str) -> str:
        """Run a documented command that makes what other commands name; returns the new folder it made."""
        result = self.run(text)
        assert result.code == 0, (text, result.err[-3000:])
        made = [path for path in result.new if fnmatch.fnmatch(path, pattern) and path.count("/") == pattern.count("/")]
        assert len(made) == 1, (text, made)
        return made[0]


def eight_bit(batch: int, size: int, seed: int) -> torch.Tensor:
    """Images in [0, 1] on the 8-bit grid (what the NIR graphs take exactly: round(images * 255))."""
    return torch.round(torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 255) / 255


def _pictures(root: Path) -> None:
    """tree.jpg, trees/ (3 JPEGs), photos/ (3 PNGs), clip.mp4 (6 frames): the trees val pictures."""
    val = sorted((embedded_root() / "images" / "val").glob("*.jpg"))
    shutil.copy(val[0], root / "tree.jpg")
    (root / "trees").mkdir()
    (root / "photos").mkdir()
    for image in val[:3]:
        shutil.copy(image, root / "trees" / image.name)
        cv2.imwrite(str(root / "photos" / f"{image.stem}.png"), cv2.imread(str(image)))
    writer = cv2.VideoWriter(str(root / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (128, 128))
    for image in val[:6]:
        writer.write(cv2.resize(cv2.imread(str(image)), (128, 128)))
    writer.release()
    assert (root / "clip.mp4").stat().st_size > 0


def _coco_files(root: Path) -> None:
    """instances_val2017.json (the trees val annotations) and results.json (their boxes, score 1: mAP 1)."""
    gt = json.loads((embedded_root() / "annotations" / "instances_val.json").read_text())
    (root / "instances_val2017.json").write_text(json.dumps(gt))
    detections = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
                  for a in gt["annotations"]]
    (root / "results.json").write_text(json.dumps(detections))


def _recording(root: Path) -> None:
    """train/rec_td.dat + train/rec_bbox.npy (a synthetic Gen1 recording of 1 s) and rec_td.dat (the same); rec.raw
    and rec.aedat4, the real camera recordings of tests/fixtures (an EVT 3.0 .raw, an AEDAT4)."""
    write_recording(root / "train", "rec", 1.0, (0, 21, 0), SceneConfig(label_period_us=100_000))
    shutil.copy(root / "train" / "rec_td.dat", root / "rec_td.dat")
    shutil.copy(FIXTURES / "events_real" / "evt3_sample.raw", root / "rec.raw")
    shutil.copy(FIXTURES / "events" / "davis346_truncated.aedat4", root / "rec.aedat4")


def _reference_checkpoint(path: Path, kind: str, classes: int) -> None:
    """A checkpoint in the published reference form (tests/reference_fakes.py): the s topology at width 1/16."""
    torch.manual_seed(0)
    weights = fakes.lively(fakes.reference_state_dict(randomize_bn(tiny_model("s", num_classes=classes))))
    fakes.make_reference_checkpoint(path, weights, "published", kind, {i: f"class{i}" for i in range(classes)})


# the documented commands that make what other commands name (the fixture runs them first)
DEMO, TINY, CONVERT, GEN1, NIR = ("spikeyolo-train experiment=demo", "spikeyolo-train experiment=demo model=tiny_yolo",
                                  "spikeyolo-convert checkpoint=runs/demo_tiny_yolo/RUN/weights/best.pt",
                                  "spikeyolo-train experiment=gen1_synthetic run_dir=runs/g1",
                                  "spikeyolo-export checkpoint=best.pt format=nir")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    """The working directory of the documented commands, with the files their placeholders name; the commands
    that make the runs other commands use are run here (through the memoised runner, so their own tests reuse
    the result)."""
    ws = Workspace(tmp_path_factory.mktemp("docs_workspace"), tmp_path_factory.mktemp("cache"))
    root = ws.root
    _pictures(root)
    _coco_files(root)
    _recording(root)
    _reference_checkpoint(root / "23M_best.pt", "coco", 80)
    _reference_checkpoint(root / "gen1_best.pt", "gen1", 2)
    torch.manual_seed(0)
    ws.names["run_n"] = ws.produce(DEMO, "runs/demo_spikeyolo_n/*")
    shutil.copy(root / ws.names["run_n"] / "weights" / "best.pt", root / "best.pt")
    ws.names["run_t"] = ws.produce(TINY, "runs/demo_tiny_yolo/*")
    assert ws.run(CONVERT).code == 0
    shutil.copy(root / ws.names["run_t"] / "weights" / "best_snn_channel_ibt.pt", root / "best_snn_channel_ibt.pt")
    ws.produce(GEN1, "runs/g1")
    export = ws.run(NIR)
    assert export.code == 0, export.err[-3000:]
    report = next(path for path in export.new if re.fullmatch(r"runs/export/[^/]+/export\.json", path))
    ws.nir = root / json.loads((root / report).read_text())["file"]
    return ws


# --------------------------------------------------------------------------- classification and the tables


def test_every_command_is_classified():
    unclassified = [f"{c.where}: {c.text}" for c in _commands() if classify(c.text) is None]
    assert not unclassified, ("commands in the docs that fit no class of tests/test_docs.py (add a rule to CLASSES, "
                              "and what it needs to PLACEHOLDERS / SHRINK):\n" + "\n".join(unclassified))
    inline = [f"{c.where}: {c.text}" for c in INLINE
              if not re.match(rf"({'|'.join(SCRIPTS)}|python3? |docker )", c.text)]
    assert not inline, inline


def test_the_pages_show_what_this_test_covers():
    """Guards against an extractor that silently finds nothing (counts as of issue #21, at least)."""
    assert len(_commands()) >= 85 and len(RUN) >= 30 and len(EXTERNAL) >= 12 and len(PYTHON_BLOCKS) >= 9
    assert len(INLINE) >= 60 and len(QUOTED) >= 45
    assert {DEMO, TINY, CONVERT, GEN1, NIR} <= set(RUN)     # the workspace is made by documented commands


@pytest.mark.parametrize("pattern,overrides", SHRINK, ids=[pattern for pattern, _ in SHRINK])
def test_shrink_keys_are_config_keys(pattern, overrides):
    """Each SHRINK entry applies to a documented command, and composes with that command's config (the first one it
    applies to, its own overrides with placeholders left as they are)."""
    applies = [text for text in RUN if re.search(pattern, text)]
    applies += [c.text for c in _static("module") if re.search(pattern, c.text)]
    assert applies, f"SHRINK entry {pattern!r} applies to no documented command"
    words, _ = split_command(applies[0])
    if words[0] not in SCRIPTS:       # an argparse module: its options are checked by running it
        return
    config = SCRIPTS[words[0]].rsplit(".", 1)[-1]
    given = [w for w in words[1:] if not w.startswith("-") and "trainer.resume" not in w and "run_dir" not in w]
    check_command_line(config, [*given, *overrides])


# --------------------------------------------------------------------------- run: for real, tiny


def _promised_paths(comment: str) -> list[str]:
    """`-> runs/demo_tiny_yolo/RUN`, `runs/export/<time>/model_integer.onnx`: globs of what the comment promises."""
    return [re.sub(r"RUN|<time>", "*", path) for path in re.findall(r"\b(runs/[\w/<>.*-]+)", comment)]


def _sweep_folders(words: list[str], result: Result, root: Path) -> None:
    """A sweep (docs/user-guide.md "Sweeps"): one folder with summary.md, summary.csv and multirun.yaml, and a run
    folder per point named <number>_<key>-<value>[+<key>-<value>...] (the swept keys only)."""
    points, swept = sweep_points([w for w in words[1:] if not w.startswith("-")])
    summaries = [path for path in result.new if path.endswith("/summary.md")]
    assert len(summaries) == 1, summaries
    sweep = summaries[0].rsplit("/", 1)[0]
    name = check_command_line("train", [w for w in words[1:] if not w.startswith("-") and "," not in w]).name
    assert re.fullmatch(rf"runs/{name}/[\d_-]+", sweep), (sweep, name)      # the sweep's run_dir
    for name in ("summary.csv", "multirun.yaml"):
        assert f"{sweep}/{name}" in result.new, name
    folders = sorted(path.rsplit("/", 1)[1] for path in result.new if re.fullmatch(rf"{re.escape(sweep)}/\d+_[^/]+",
                                                                                     path))
    names = ["+".join(f"{o.partition('=')[0]}-{o.partition('=')[2]}" for o in point
                      if o.partition("=")[0] in swept) for point in points]
    assert folders == sorted(f"{number}_{name}" for number, name in enumerate(names)), folders
    rows = [line for line in (root / sweep / "summary.csv").read_text().splitlines()[1:] if line.strip()]
    assert len(rows) == len(points), rows
    assert all((root / sweep / folder / "weights" / "best.pt").is_file() for folder in folders)


@pytest.mark.parametrize("text", RUN, ids=_ids(RUN))
def test_documented_command_runs(text, workspace):
    result = workspace.run(text)
    words, _ = workspace.prepare(text)
    assert result.code == 0, (words, result.err[-3000:], result.out[-2000:])
    program = words[0]
    new = result.new
    if program == "spikeyolo-train" and "-m" in words:
        _sweep_folders(words, result, workspace.root)
    elif program == "spikeyolo-train" and "trainer.resume=true" in words:
        run_dir = workspace.root / next(w for w in words if w.startswith("run_dir=")).split("=", 1)[1]
        records = (run_dir / "metrics.jsonl").read_text().splitlines()
        assert len(records) == 2 and (run_dir / "config.1.yaml").is_file()   # one epoch more; the old config kept
        assert json.loads((run_dir / "metrics.json").read_text())["epochs_trained"] == 2
    elif program == "spikeyolo-train":
        runs = {p.rsplit("/weights", 1)[0] for p in new if p.endswith("/weights/best.pt")}
        assert len(runs) == 1, sorted(runs)
        run = runs.pop()
        missing = [name for name in RUN_FILES if f"{run}/{name}" not in new]
        assert not missing, (run, missing)
        # README: a run lands in runs/<name>/<time> (<model>_<data>, or the experiment's) unless run_dir= says
        given = next((w.split("=", 1)[1] for w in words if w.startswith("run_dir=")), None)
        name = check_command_line("train", words[1:]).name
        assert run == given if given else re.fullmatch(rf"runs/{name}/[\d_-]+", run), (run, name)
    elif program == "spikeyolo-convert":       # prints the SNN checkpoint it wrote (beside the ANN's)
        written = workspace.root / result.out.strip().splitlines()[-1]
        assert written.name.endswith("_snn_channel_ibt.pt") and written.is_file(), result.out[-500:]
    else:
        globs = OUTPUTS.get(program)
        if globs:
            assert any(fnmatch.fnmatch(path, glob) for path in new for glob in globs), (globs, sorted(new)[:40])
    for command in RUN[text]:
        for glob in _promised_paths(command.comment):
            assert any(fnmatch.fnmatch(path, glob) for path in new), (command.where, glob, sorted(new)[:40])
    if "detections=results.json" in text:      # a results file of the ground truth's own boxes: mAP 1
        metrics = json.loads((workspace.root / next(p for p in new if p.endswith("metrics.json"))).read_text())
        assert metrics["map50_95"] == pytest.approx(1.0) and metrics["map50"] == pytest.approx(1.0)
    if text == "spikeyolo-summary model=spikeyolo_s data.imgsz=640":    # README: 23,153,024 parameters (80 classes)
        assert "total parameters 23,153,024" in result.out, result.out[-500:]
    if "save_txt=true" in text:
        assert any(re.search(r"/labels/[^/]+\.txt$", p) for p in new), sorted(new)[:40]
    if "source=clip.mp4" in text:
        assert any(p.endswith("/clip.mp4") for p in new), sorted(new)[:40]


# --------------------------------------------------------------------------- external: one clear line


@pytest.mark.parametrize("text", EXTERNAL, ids=_ids(EXTERNAL))
def test_command_needing_what_is_not_here_fails_clearly(text, workspace):
    before = _files(workspace.root)
    result = workspace.run(text, shrink=False)
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert result.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (result.code, result.err[-3000:])
    assert "Traceback" not in result.err + result.out
    wanted = [names for pattern, names in EXTERNAL_NAMES if re.search(pattern, text)]
    assert wanted and any(re.search(names, lines[0]) for names in wanted), (lines[0], wanted)
    assert _files(workspace.root) == before, sorted(_files(workspace.root) - before)


# --------------------------------------------------------------------------- static: install, suite, docker, shell


def _static(kind: str) -> list[Command]:
    return [c for c in _commands() if (classify(c.text) or ("?",))[0] == kind]


def _extras() -> set[str]:
    section = PYPROJECT.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([\w-]+)\s*=", section, flags=re.M))


@pytest.mark.parametrize("command", _static("install") + _static("suite"), ids=lambda c: c.where)
def test_install_and_test_lines(command):
    words, _ = split_command(command.text)
    if command.text.startswith("python3 -m venv"):
        assert words == ["python3", "-m", "venv", ".venv"]
    elif "pytest" in words:
        assert words[-1] == "-q" and 'testpaths = ["tests"]' in PYPROJECT
        assert "pytest" in PYPROJECT.split("\ntest = ", 1)[1].split("\n", 1)[0]
    else:
        assert words[:3] == ["pip", "install", "-e"] and len(words) == 4, words
        target = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", words[3])
        assert target, words
        assert set((target[1] or "").split(",")) - {""} <= _extras(), (target[1], _extras())


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _docker_tags() -> set[str]:
    docker = [c for c in _static("docker") + [i for i in INLINE if i.text.startswith("docker ")]]
    return {m for c in docker for m in re.findall(r"-t (\S+)", c.text)}


def _parse_inner(words: list[str], where: str) -> None:
    """The command a container runs: a console script (or torchrun -m spikeyolo.cli.X) whose overrides compose."""
    if words[0] == "torchrun":
        assert words[words.index("-m") + 1].startswith("spikeyolo.cli."), words
        config, overrides = words[words.index("-m") + 1].rsplit(".", 1)[-1], words[words.index("-m") + 2:]
    else:
        assert words[0] in SCRIPTS, (where, words)
        config, overrides = SCRIPTS[words[0]].rsplit(".", 1)[-1], words[1:]
    overrides = [o for o in overrides if not o.startswith("<")]
    try:
        check_command_line(config, overrides)
    except UserError as err:    # a resume's run_dir, a checkpoint: files inside the container are not checked
        raise AssertionError(f"{where}: {words}: {err}") from None


DOCKER = _static("docker") + [c for c in INLINE if c.text.startswith("docker ")]


@pytest.mark.parametrize("command", DOCKER, ids=lambda c: c.where)
def test_docker_lines(command):
    dockerfile = _dockerfile()
    args = set(re.findall(r"^ARG (\w+)", dockerfile, flags=re.M))
    volumes = set(json.loads(re.search(r"^VOLUME (\[.*\])", dockerfile, flags=re.M)[1]))
    for part in re.split(r" && ", command.text):
        words = shlex.split(part.replace("...", ""))
        if words[:2] == ["docker", "build"]:
            assert words[-1] == "." and (ROOT / "Dockerfile").is_file()
            for name in re.findall(r"--build-arg (\w+)=", part):
                assert name in args, (name, args)
            continue
        assert words[:2] == ["docker", "run"], words
        rest = words[2:]
        while rest and rest[0].startswith("-"):
            option = rest.pop(0)
            if option in ("--user", "-v", "-e", "--gpus") and rest:
                value = rest.pop(0)
                if option == "-v":
                    mount = value.split(":")[1]
                    assert mount in volumes, (mount, volumes)   # docs/docker.md's table: datasets, runs, wandb
        if "..." in part:      # `docker run ... spikeyolo-train <overrides>`: the options and the image left out
            rest = ["spikeyolo:cpu", *rest]
        image, inner = rest[0], rest[1:]
        assert image in _docker_tags(), (image, _docker_tags())
        if inner and not inner[-1].startswith("<"):
            _parse_inner(inner, command.where)
    assert re.search(r'^CMD \["(spikeyolo-\w+)"', dockerfile, flags=re.M)[1] in SCRIPTS


def test_docker_volumes_are_the_documented_ones():
    """The Dockerfile's VOLUMEs are the folders docs/docker.md's table explains."""
    table = set(re.findall(r"^\| `(/workspace/\w+)` \|", (ROOT / "docs" / "docker.md").read_text(), flags=re.M))
    volumes = set(json.loads(re.search(r"^VOLUME (\[.*\])", _dockerfile(), flags=re.M)[1]))
    assert table == volumes, (table, volumes)


@pytest.mark.parametrize("command", _static("device"), ids=lambda c: c.where)
def test_device_lines(command):
    """The GPU session's commands (docs/benchmarks.md): the script they name exists and parses (bash -n)."""
    script = re.search(r"scripts/[\w-]+\.sh", command.text)[0]
    assert (ROOT / script).is_file(), command.where
    assert subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True).returncode == 0, command.where
    if command.text.startswith("run("):
        assert 'carry=[".whl"]' in command.text, command.where


@pytest.mark.parametrize("command", _static("shell"), ids=lambda c: c.where)
def test_shell_lines(command):
    """`mkdir -p runs datasets wandb`: the folders the docker run lines of the same page mount."""
    folders = shlex.split(command.text)[2:]
    mounted = {m for c in DOCKER if c.page == command.page for m in re.findall(r'\$PWD/(\w+):', c.text)}
    assert set(folders) == mounted, (folders, mounted)


# --------------------------------------------------------------------------- scripts, python -c, modules


def _script_uses() -> dict[str, list[Command]]:
    uses: dict[str, list[Command]] = {}
    for command in _static("script") + [c for c in INLINE if re.match(r"python3? scripts/", c.text)]:
        uses.setdefault(shlex.split(command.text)[1], []).append(command)
    return uses


SCRIPT_USES = _script_uses()


@pytest.mark.parametrize("script", SCRIPT_USES, ids=list(SCRIPT_USES))
def test_documented_script(script, tmp_path):
    assert (ROOT / script).is_file(), script
    result = run_main(["python", script, "--help"], tmp_path, {}, tmp_path)
    assert result.code == 0, result.err[-3000:]
    for command in SCRIPT_USES[script]:
        for option in re.findall(r"(?<=\s)(--?[a-zA-Z][\w-]*)", command.text):
            assert re.search(rf"(^|[\s,\[]){re.escape(option)}\b", result.out), (command.where, option)


def test_kmeans_anchors_are_the_ones_conversion_trains_with(tmp_path):
    """docs/conversion.md: the anchors of its training command come from its kmeans_anchors.py command."""
    command = next(c for c in INLINE if c.text.startswith("python scripts/kmeans_anchors.py spikeyolo/"))
    trained = next(c for c in INLINE if "model.anchors=" in c.text)
    anchors = re.search(r"model\.anchors=\[\[([\d.,]+)\]\]", trained.text)[1]
    result = run_main(split_command(substitute(command.text, {}))[0], tmp_path, {}, tmp_path)
    assert result.code == 0, result.err[-2000:]
    assert f"[{anchors.replace(',', ', ')}]" in result.out, result.out


@pytest.mark.parametrize("command", _static("python -c") + _static("module"), ids=lambda c: c.where)
def test_python_command_lines(command, workspace):
    result = workspace.run(command.text)
    assert result.code == 0, result.err[-3000:]
    if " -m spikeyolo.data.events.make_synthetic " in command.text:
        words, _ = workspace.prepare(command.text)
        assert any(re.fullmatch(rf"{words[3]}/test/\w+_td\.dat", path) for path in result.new), sorted(result.new)


# --------------------------------------------------------------------------- inline commands: they compose

# documented refusals among the inline commands (docs/reliability.md shows them failing): the one line they give
INLINE_REFUSED = {
    "spikeyolo-export model=spikeyolo_n": "'model' in 'model=spikeyolo_n' is not a config group of this command",
    "spikeyolo-train -m neuron.max_level=1,abc": "neuron.max_level must be an integer, got 'abc'",
}
# how an inline fragment becomes a command line (it is composed, not run: files need not exist)
INLINE_PLACEHOLDERS = [
    (r"<[^<>]+>", "best.pt"),                 # checkpoint=<gen4 checkpoint>
    (r"\$checkpoint\b", "best.pt"),           # docs/model-card-template.md
    (r"=\.\.\./", "="),                       # checkpoint=.../best.pt
    (r"=\.\.\.(?=\s|$)", "=best.pt"),         # checkpoint=...
    (r",\.\.\.\]", "]"),                      # timesteps=[8,...]
    (r"(?<=\s)\.\.\.(?=\s)", ""),             # spikeyolo-eval ... protocol=prophesee_gen4
]


def _inline_lines(command: Command) -> list[str]:
    """The command lines of an inline span: `&&` split, `a|b` values expanded."""
    text = command.text
    for pattern, replacement in INLINE_PLACEHOLDERS:
        text = re.sub(pattern, replacement, text)
    lines = []
    for part in text.split(" && "):
        choices = [[f"{word.partition('=')[0]}={value}" for value in word.partition("=")[2].split("|")]
                   if "=" in word and "|" in word else [word] for word in shlex.split(part)]
        lines += [list(words) for words in itertools.product(*choices)]
    return lines


INLINE_SPIKEYOLO = [c for c in INLINE if re.match("|".join(SCRIPTS), c.text)]


@pytest.mark.parametrize("command", INLINE_SPIKEYOLO, ids=[f"{c.where}:{c.text[:40]}" for c in INLINE_SPIKEYOLO])
def test_inline_command_composes(command, tmp_path):
    for words in _inline_lines(command):
        program, args = words[0], words[1:]
        assert program in SCRIPTS, words
        config = SCRIPTS[program].rsplit(".", 1)[-1]
        overrides = [a for a in args if not a.startswith("-")]
        flags = [a for a in args if a.startswith("-")]
        if flags and "-m" not in flags:      # --help, --cfg job: answered for real
            result = run_main(words, tmp_path, {}, tmp_path)
            assert result.code == 0 and result.out.strip(), result.err[-2000:]
            continue
        try:
            points = sweep_points(overrides)[0] if "-m" in flags else [overrides]
            for point in points:
                check_command_line(config, point)
            error = None
        except UserError as err:
            error = str(err)
        expected = INLINE_REFUSED.get(command.text)
        if expected is not None:
            assert error is not None and expected in error, (command.where, error)
        elif error is not None and not re.fullmatch(r"checkpoint has no value \(\?\?\?\): give checkpoint=\.\.\.",
                                                     error):
            raise AssertionError(f"{command.where}: `{command.text}`: {error}")


# --------------------------------------------------------------------------- Python blocks


def _free_names(code: str) -> set[str]:
    """Names a block reads but never binds (imports, assignments, loop variables, functions)."""
    tree = ast.parse(code)
    loaded, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return loaded - bound - set(dir(builtins))


def _calibration_batches(ws: Workspace) -> list[torch.Tensor]:
    return [eight_bit(2, 64, seed) for seed in (1, 2)]


# What a block uses without defining it (the docs say what it is: "path is the file given to the export, images
# [B, 3, H, W] in [0, 1]"; the conversion block's ann and calibration_batches).
PRELUDE: dict[str, Callable[[Workspace], object]] = {
    "images": lambda ws: eight_bit(2, 64, 0),
    "path": lambda ws: str(ws.nir),                   # the NIR file of `spikeyolo-export checkpoint=best.pt format=nir`
    "ann": lambda ws: spikeyolo.load_checkpoint(ws.root / ws.names["run_t"] / "weights" / "best.pt"),
    "calibration_batches": _calibration_batches,
    "spikeyolo": lambda ws: spikeyolo,                # the README's blocks import it; the user guide's continue them
}


def _check_promises(statement: ast.stmt, source: list[str], namespace: dict, where: str) -> None:
    """A comment on an assignment that promises a shape (# [2, 240, 304, 3]) or a parameter count."""
    if not (isinstance(statement, ast.Assign) and isinstance(statement.targets[0], ast.Name)):
        return
    comment = source[statement.lineno - 1].partition("#")[2]
    value = namespace[statement.targets[0].id]
    shape = re.match(r"\s*\[(\d+(?:, \d+)+)\]", comment)
    if shape:
        assert tuple(value.shape) == tuple(int(d) for d in shape[1].split(", ")), (where, tuple(value.shape))
    count = re.match(r"\s*([\d,]+) parameters", comment)
    if count:
        assert sum(p.numel() for p in value.parameters()) == int(count[1].replace(",", "")), where


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.where for b in PYTHON_BLOCKS])
def test_python_block_runs(block, workspace, monkeypatch, capsys):
    code = substitute(block.text, workspace.names, code=True)
    missing = _free_names(code) - set(PRELUDE)
    assert not missing, f"{block.where} uses {sorted(missing)} without defining them: add them to PRELUDE"
    for consumer in ("snntorch", "norse", "sinabs", "nirtorch"):
        if re.search(rf"^(import|from) {consumer}\b", code, flags=re.M):
            pytest.importorskip(consumer)
    namespace = {name: PRELUDE[name](workspace) for name in _free_names(code)}
    monkeypatch.chdir(workspace.root)
    source = code.splitlines()
    for statement in ast.parse(code).body:
        exec(compile(ast.Module([statement], []), f"{block.where}", "exec"), namespace)
        _check_promises(statement, source, namespace, block.where)
    if "verify_equivalence(" in code:                # docs/spike-driven.md: every spike-driven conv saw 0/1 only
        assert namespace["report"].all_binary and namespace["report"].num_convs_checked > 0, namespace["report"]
    if "exported.run(stages, images)" in code:       # the importers give the fixed-point spike-driven detections
        from spikeyolo.deploy.fixed_point import to_fixed_point
        model = spikeyolo.load_checkpoint(workspace.root / "best.pt")
        with torch.no_grad():
            expected, _ = to_fixed_point(model)(namespace["images"])
        assert torch.equal(namespace["decoded"], expected), block.where


# --------------------------------------------------------------------------- quoted errors


@dataclass(frozen=True)
class Trigger:
    """Run a command line that must print the quoted error. ``args`` and the values of ``sub`` are formatted with
    {tmp} (an empty folder, the working directory unless ``in_workspace``), {best} (the demo's best.pt) and what
    ``setup`` returns; ``sub`` maps placeholders of the quote to what this run prints there (None: any text)."""

    program: str
    args: tuple[str, ...]
    sub: dict = field(default_factory=dict)
    setup: Callable[[Path, Workspace], dict] | None = None
    in_workspace: bool = False
    leaves: bool = False          # the command started (a run folder is expected)


@dataclass(frozen=True)
class InSource:
    """Cannot be made to happen here: the message must be one of the package's f-strings (values free)."""

    why: str
    package: str = "spikeyolo"


@dataclass(frozen=True)
class Direct:
    """The function raises what the row describes inside the CLI's error wrapper."""

    raise_it: Callable[[], None]
    sub: dict = field(default_factory=dict)


def _disk_full() -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/x/weights/last.pt")


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _weights_only_evil(tmp: Path, ws: Workspace) -> dict:
    from spikeyolo.engine import checkpoint as ckpt
    torch.save({"format": ckpt.FORMAT, "version": 1, "model": _Payload()}, tmp / "evil.pt")
    return {}


def _reference_evil(tmp: Path, ws: Workspace) -> dict:
    zip_file(tmp / "evil.pt", reference_payload(call("os", "system", op_str("true"))))
    return {}


def _run_copy(tmp: Path, ws: Workspace, weights: bool = False, **changes) -> Path:
    """A copy of the demo run's config.yaml (and weights/last.pt) in {tmp}/run, with ``changes`` (a.b=value)."""
    run = tmp / "run"
    (run / "weights").mkdir(parents=True)
    config = yaml.safe_load((ws.root / ws.names["run_n"] / "config.yaml").read_text())
    for key, value in changes.items():
        node = config
        *parents, leaf = key.split("__")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if weights:
        shutil.copy(ws.root / ws.names["run_n"] / "weights" / "last.pt", run / "weights" / "last.pt")
    else:
        (run / "weights").rmdir()
    return run


def _label_set(tmp: Path, line: str, at: int) -> dict:
    """A YOLO set (3 train / 2 val trees pictures, 2 class names) whose first train label file has ``line`` at
    line ``at`` (valid rows before it)."""
    yaml_path = yolo_set(tmp / "set", names=("tree", "bush"))
    label = min((tmp / "set" / "labels" / "train").iterdir())
    label.write_text("".join(f"0 0.{10 + row} 0.5 0.05 0.05\n" for row in range(at - 1)) + line + "\n")
    return {"yaml": str(yaml_path), "label": str(label)}


def _unreadable_train(tmp: Path, ws: Workspace) -> dict:
    yaml_path = yolo_set(tmp / "set", names=("tree", "bush"))
    for image in (tmp / "set" / "images" / "train").iterdir():
        image.write_bytes(b"not an image")
    return {"yaml": str(yaml_path)}


def _empty_val(tmp: Path, ws: Workspace) -> dict:
    yaml_path = yolo_set(tmp / "set", names=("tree", "bush"))
    for image in (tmp / "set" / "images" / "val").iterdir():
        image.unlink()
    return {"yaml": str(yaml_path)}


def _truncated(tmp: Path, ws: Workspace) -> dict:
    data = (ws.root / "best.pt").read_bytes()
    (tmp / "t.pt").write_bytes(data[: len(data) // 2])
    return {}


def _no_imgsz(tmp: Path, ws: Workspace) -> dict:
    tiny_checkpoint(tmp / "best.pt")        # a model_config, no train_config
    return {}


TINY_RUN = (*TRAIN_SHRINK, "run_dir={tmp}/run")
ANY = None
# the quotes, by the beginning of their message (a quote matches exactly one entry)
QUOTES: dict[str, Trigger | InSource | Direct] = {
    # docs/reliability.md "Killed runs and full disks"
    "No space left on device": Direct(_disk_full),
    "only 78.30 GB free": Trigger("spikeyolo-train", (*TINY_RUN, "trainer.min_free_gb=100000"),
                                  {"78.30": ANY, "/tmp/x": "{tmp}/run"}),
    "run_dir /etc/hostname/sub cannot": Trigger("spikeyolo-train", ("run_dir={tmp}/file/sub",),
                                                {"/etc/hostname/sub": "{tmp}/file/sub", "/etc/hostname": "{tmp}/file"},
                                                setup=lambda tmp, ws: (tmp / "file").write_text("x") and {}),
    "run_dir /runs/x already holds a run": Trigger("spikeyolo-train", ("run_dir={tmp}/run",), {"/runs/x": "{tmp}/run"},
                                                   setup=lambda tmp, ws: _run_copy(tmp, ws, weights=True) and {}),
    "run_dir /x is not writable": InSource("a folder without write permission: not as root (this test runs as any "
                                           "user; tests/test_reliability.py tries the probe)"),
    "cannot read checkpoint evil.pt": Trigger("spikeyolo-eval", ("checkpoint=evil.pt",), setup=_weights_only_evil),
    "refusing global os.system in a reference checkpoint": Trigger("spikeyolo-eval", ("checkpoint=evil.pt",),
                                                                   {"best.pt": "evil.pt"}, setup=_reference_evil),
    "non-finite loss at epoch 1": Trigger("spikeyolo-train", ("experiment=demo", *TINY_RUN, "optim.lr0=1e30",
                                                              "optim.grad_clip=0", "optim.warmup_epochs=0"),
                                          leaves=True),
    "data loading failed in epoch": InSource("a loader worker failing after the scan: "
                                             "tests/test_reliability.py::test_loader_worker_failure_names_the_file"),
    "Image Not Found": InSource("ultralytics' loader message for a picture it cannot read after the scan: "
                                "tests/test_reliability.py", package="ultralytics.data"),
    # "Resuming: the run's own config"
    "RUN/config.yaml: trainer.epochs: Value 'many'": Trigger(
        "spikeyolo-train", ("run_dir={tmp}/run", "trainer.resume=true"), {"RUN": "{tmp}/run"},
        setup=lambda tmp, ws: _run_copy(tmp, ws, trainer__epochs="many") and {}),
    "trainer.resume=true continues": Trigger(
        "spikeyolo-train", ("run_dir={tmp}/run", "trainer.resume=true", "model.width_multiple=0.125",
                            "trainer.epochs=2"), {"/runs/x": "{tmp}/run"},
        setup=lambda tmp, ws: _run_copy(tmp, ws, trainer__epochs=3) and {}),
    "trainer.resume=true needs run_dir=": Trigger("spikeyolo-train", ("trainer.resume=true",)),
    "trainer.resume=true but /x/config.yaml": Trigger("spikeyolo-train", ("run_dir={tmp}/x", "trainer.resume=true"),
                                                      {"/x": "{tmp}/x"},
                                                      setup=lambda tmp, ws: (tmp / "x").mkdir() or {}),
    # "Bad command lines"
    "unknown config key 'trainer.epochz'": Trigger("spikeyolo-train", ("trainer.epochz=3",)),
    "unknown config key 'foo'": Trigger("spikeyolo-train", ("foo=1",)),
    "unknown config key 'model.foo'": Trigger("spikeyolo-train", ("model.foo=1",)),
    "unknown model option": Trigger("spikeyolo-train", ("model=nope",)),
    "unknown experiment option": Trigger("spikeyolo-train", ("experiment=nope",)),
    "'model' in 'model=spikeyolo_n'": Trigger("spikeyolo-export", ("model=spikeyolo_n",)),
    "trainer.epochs must be": Trigger("spikeyolo-train", ("trainer.epochs=abc",)),
    "optim.lr0 must be": Trigger("spikeyolo-train", ("optim.lr0=[1]",)),
    "trainer.ema must be": Trigger("spikeyolo-train", ("trainer.ema=maybe",)),
    "trainer.max_minutes must be": Trigger("spikeyolo-train", ("trainer.max_minutes=abc",)),
    "'trainer.device=0,1' is a sweep": Trigger("spikeyolo-train", ("trainer.device=0,1",)),
    "cannot parse override": Trigger("spikeyolo-train", ("trainer.epochs=[1",)),
    "neuron.max_level must be": Trigger("spikeyolo-train", ("-m", "neuron.max_level=1,abc")),
    "BasicSweeper does not support": Trigger("spikeyolo-train", ("-m", "neuron.max_level=interval(1,4)")),
    # "Bad values, files and datasets"
    "max_level (D) must be": Trigger("spikeyolo-summary", ("neuron.max_level=0",)),
    "neuron.time_steps=0 is out of range": Trigger("spikeyolo-summary", ("neuron.time_steps=0",)),
    "model.early_block='block9'": Trigger("spikeyolo-summary", ("model.early_block=block9",)),
    "data.imgsz=100 is not": Trigger("spikeyolo-summary", ("data.imgsz=100",)),
    "the checkpoint does not record": Trigger("spikeyolo-eval", ("checkpoint=best.pt",), setup=_no_imgsz),
    "/runs/x/weights/last.pt holds another": Trigger(
        "spikeyolo-train", ("run_dir={tmp}/run", "trainer.resume=true"), {"/runs/x": "{tmp}/run"},
        setup=lambda tmp, ws: _run_copy(tmp, ws, weights=True, model__width_multiple=0.125) and {}),
    "trainer.resume=true but /runs/x/weights/last.pt": Trigger(
        "spikeyolo-train", ("run_dir={tmp}/run", "trainer.resume=true"), {"/runs/x": "{tmp}/run"},
        setup=lambda tmp, ws: _run_copy(tmp, ws) and {}),
    "/runs/x/weights/last.pt already finished": Trigger(
        "spikeyolo-train", ("run_dir={tmp}/run", "trainer.resume=true"), {"/runs/x": "{tmp}/run", "3 of 3": ANY},
        setup=lambda tmp, ws: _run_copy(tmp, ws, weights=True) and {}),
    "cannot read checkpoint /tmp/t.pt": Trigger("spikeyolo-eval", ("checkpoint={tmp}/t.pt",),
                                                {"/tmp/t.pt": "{tmp}/t.pt"}, setup=_truncated),
    "foreign.pt is not": Trigger("spikeyolo-eval", ("checkpoint=foreign.pt",),
                                 setup=lambda tmp, ws: torch.save({"weights": torch.zeros(2)}, tmp / "foreign.pt")
                                 or {}),
    "checkpoint not found": Trigger("spikeyolo-eval", ("checkpoint={tmp}/nope.pt",), {"/tmp/nope.pt": "{tmp}/nope.pt"}),
    "device=cuda asks": Trigger("spikeyolo-eval", ("checkpoint={best}", "device=cuda")),
    "data.yaml: an Ultralytics": Trigger("spikeyolo-train", (*TINY_RUN, "data=yolo")),
    "data.yaml=/data/set: a folder": Trigger("spikeyolo-train", (*TINY_RUN, "data=yolo", "data.yaml={tmp}"),
                                             {"/data/set": "{tmp}"}),
    "checkpoint=best.pt was trained on images": Trigger("spikeyolo-predict", ("checkpoint=best.pt",
                                                                              "events=rec_td.dat"), in_workspace=True),
    "deploy must be one of": Trigger("spikeyolo-eval", ("checkpoint={best}", "deploy=binary")),
    "/data/set/labels/train/X.txt:38": Trigger(
        "spikeyolo-train", (*TINY_RUN, "data=yolo", "data.yaml={yaml}"), {"/data/set/labels/train/X.txt": "{label}"},
        setup=lambda tmp, ws: _label_set(tmp, "5 0.5 0.5 0.1 0.1", 38)),
    "/data/set/labels/train/X.txt:1:": Trigger(
        "spikeyolo-train", (*TINY_RUN, "data=yolo", "data.yaml={yaml}"), {"/data/set/labels/train/X.txt": "{label}"},
        setup=lambda tmp, ws: _label_set(tmp, "0 0.5 0.5 0.1", 1)),
    "/data/set/images/val: no images": Trigger("spikeyolo-train", (*TINY_RUN, "data=yolo", "data.yaml={yaml}"),
                                               {"/data/set": "{tmp}/set"}, setup=_empty_val),
    "...: no readable images": Trigger("spikeyolo-train", (*TINY_RUN, "data=yolo", "data.yaml={yaml}"),
                                       setup=_unreadable_train),
}


def _entry_of(quote: Quote) -> str:
    keys = [key for key in QUOTES if quote.text.startswith(f"error: {key}")]
    assert len(keys) == 1, (f"{quote.where}: `{quote.text}` matches {keys} of QUOTES in tests/test_docs.py: add an "
                            "entry that triggers it (or says why it cannot be)")
    return keys[0]


def test_every_quote_entry_is_used():
    """No stale entry: each one serves a quote, and each placeholder it replaces is in one of its quotes."""
    used = {_entry_of(quote) for quote in QUOTED}
    assert set(QUOTES) == used, sorted(set(QUOTES) - used)
    for key, spec in QUOTES.items():
        quoted = " ".join(quote.text for quote in QUOTED if _entry_of(quote) == key)
        for placeholder in getattr(spec, "sub", {}):
            assert placeholder in quoted, f"QUOTES[{key!r}] replaces {placeholder!r}, which its quotes do not have"


def _quote_pattern(message: str, sub: dict[str, str | None]) -> re.Pattern:
    """The quote as a pattern: `...` matches anything, each placeholder of ``sub`` its value (None: anything)."""
    keys = sorted([*sub, "..."], key=len, reverse=True)
    parts = re.split("(" + "|".join(re.escape(k) for k in keys) + ")", message)
    pattern = "".join(".*?" if part == "..." else ".+?" if part in sub and sub[part] is None
                      else re.escape(sub[part]) if part in sub else re.escape(part) for part in parts)
    return re.compile(pattern)


@cache
def _source_messages(package: str) -> tuple[re.Pattern, ...]:
    """Every string and f-string of a package's source as a pattern (a formatted value matches anything)."""
    root = Path(__import__(package, fromlist=["__name__"]).__file__).parent
    patterns = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.JoinedStr):
                patterns.append("".join(re.escape(v.value) if isinstance(v, ast.Constant) else ".*"
                                        for v in node.values))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) > 8:
                patterns.append(re.escape(node.value))
    return tuple(re.compile(p, re.S) for p in patterns if p.strip(".*"))


@pytest.mark.parametrize("quote", QUOTED, ids=[f"{q.where}:{q.text[7:40]}" for q in QUOTED])
def test_quoted_error_is_what_the_code_prints(quote, workspace, tmp_path):
    spec = QUOTES[_entry_of(quote)]
    message = quote.text.removeprefix("error: ")
    if isinstance(spec, InSource):
        matches = [p for p in _source_messages(spec.package) if p.fullmatch(message)]
        assert matches, f"{quote.where}: no message of {spec.package} reads `{message}` ({spec.why})"
        return
    if isinstance(spec, Direct):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
            friendly_errors(spec.raise_it)()
        code, stderr, new = exit_.value.code, err.getvalue(), set()
        values: dict = {}
    else:
        cwd = workspace.root if spec.in_workspace else tmp_path
        values = {"tmp": str(tmp_path), "best": str(workspace.root / "best.pt")}
        if spec.setup is not None:
            values.update(spec.setup(tmp_path, workspace) or {})
        args = [arg.format(**values) for arg in spec.args]
        before = _files(cwd)
        result = run_main([spec.program, *args], cwd, {}, workspace.cache)
        code, stderr = result.code, result.err
        new = _files(cwd) - before
        if not spec.leaves:
            assert not new, (quote.where, sorted(new))
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in stderr, (quote.where, code, stderr[-3000:])
    sub = {key: None if value is None else value.format(**values) for key, value in getattr(spec, "sub", {}).items()
           if key in message}
    pattern = _quote_pattern(message, sub)
    assert lines[0].startswith("error: ") and pattern.fullmatch(lines[0].removeprefix("error: ")), \
        f"{quote.where} quotes\n  error: {message}\nbut the code prints\n  {lines[0]}"
