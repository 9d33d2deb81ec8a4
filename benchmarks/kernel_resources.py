"""Registers, spills, stack and shared memory of every Triton kernel the rasterizer and the
hash grid launch, compiled for a GPU that need not be here (Triton's bundled ptxas).

    python benchmarks/kernel_resources.py                  # sm_86 and sm_90, a Markdown table
    python benchmarks/kernel_resources.py --sm 86 --check  # exit 1 on a spill or 255 registers
    python benchmarks/kernel_resources.py --json res.json  # also the rows as JSON

Each kernels module lists its launches in `gpu_launches()`, read from the same constants its
launch code uses on CUDA (not the interpreter's), so what is compiled here is what a GPU runs.
Figures come from `ptxas -v` run with Triton's own flags on the PTX Triton generated; on a
machine with a GPU, `--loaded` also loads each cubin and prints the driver's n_regs/n_spills.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compile for real: must happen before triton is imported
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODULES = (
    "gstalker.kernels.projection",
    "gstalker.kernels.binning",
    "gstalker.kernels.blending",
    "gstalker.kernels.hashgrid",
)
REG_CAP = 255


def _ptxas_path(sm: int) -> str:
    from triton.backends.nvidia import compiler as nv

    try:
        return nv.get_ptxas(sm).path
    except (AttributeError, TypeError):  # older Triton: get_ptxas(target) or a path helper
        pass
    try:
        return nv.get_ptxas().path
    except (AttributeError, TypeError):
        pass
    return str(Path(nv.__file__).parent / "bin" / "ptxas")


def _ptxas_usage(ptx: str, sm: int) -> dict:
    """Runs ptxas -v as Triton does (-lineinfo, --regAllocOptLevel=2) and parses its report."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        cmd = [_ptxas_path(sm), "-lineinfo", "-v", "--regAllocOptLevel=2", f"--gpu-name=sm_{sm}{'a' if sm == 90 else ''}",
               str(src), "-o", str(Path(tmp) / "k.o")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 and sm == 90:  # a ptxas without sm_90a: plain sm_90
            cmd[4] = "--gpu-name=sm_90"
            proc = subprocess.run(cmd, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"ptxas failed:\n{log[-2000:]}")

    def num(pattern):
        m = re.search(pattern, log)
        return int(m.group(1)) if m else 0

    return {
        "registers": num(r"Used (\d+) registers"),
        "spill_stores": num(r"(\d+) bytes spill stores"),
        "spill_loads": num(r"(\d+) bytes spill loads"),
        "stack": num(r"(\d+) bytes stack frame"),
    }


def compile_launch(module, launch, sm: int, loaded: bool = False) -> dict:
    """Compiles one `Launch` for sm_<sm> and returns its row of the table."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = getattr(module, launch.kernel)
    names = list(kernel.arg_names)
    unknown = set(launch.constexprs) - set(names)
    if unknown:
        raise ValueError(f"{launch.kernel}: constexprs {sorted(unknown)} are not arguments of the kernel")
    consts = dict(launch.constexprs)
    sig = {n: "constexpr" if n in consts else launch.types.get(n, "*fp32" if n.endswith("_ptr") else "i32") for n in names}
    src = ASTSource(fn=kernel, signature=sig, constexprs={(names.index(n),): v for n, v in consts.items()})
    compiled = triton.compile(src, target=GPUTarget("cuda", sm, 32), options={"num_warps": launch.num_warps})
    meta = compiled.metadata
    row = {
        "kernel": launch.kernel,
        "config": ", ".join(f"{k}={v}" for k, v in launch.constexprs.items()) + (f" ({launch.note})" if launch.note else ""),
        "sm": sm,
        "num_warps": launch.num_warps,
        "shared": int(getattr(meta, "shared", 0) or 0),
    }
    row.update(_ptxas_usage(compiled.asm["ptx"], sm))
    if loaded:
        compiled._init_handles()
        row["driver_n_regs"], row["driver_n_spills"] = compiled.n_regs, compiled.n_spills
    return row


def all_rows(sms=(86, 90), loaded: bool = False, only: str = "") -> list[dict]:
    rows = []
    for sm in sms:
        for name in MODULES:
            module = importlib.import_module(name)
            for launch in module.gpu_launches():
                if only in f"{name}.{launch.kernel}":
                    rows.append(compile_launch(module, launch, sm, loaded))
    return rows


def problems(rows) -> list[str]:
    """The rows that spill or sit at the register cap, one line each."""
    out = []
    for r in rows:
        if r["spill_stores"] or r["spill_loads"]:
            out.append(f"sm_{r['sm']} {r['kernel']} [{r['config']}]: spills {r['spill_stores']} B stored, {r['spill_loads']} B loaded")
        if r["registers"] >= REG_CAP:
            out.append(f"sm_{r['sm']} {r['kernel']} [{r['config']}]: at the {REG_CAP}-register cap")
    return out


def print_table(rows) -> None:
    head = ["sm", "kernel", "config", "num_warps", "registers", "spill stores B", "spill loads B", "stack B", "shared B"]
    keys = ["sm", "kernel", "config", "num_warps", "registers", "spill_stores", "spill_loads", "stack", "shared"]
    if rows and "driver_n_regs" in rows[0]:
        head += ["driver n_regs", "driver n_spills"]
        keys += ["driver_n_regs", "driver_n_spills"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        print("| " + " | ".join(f"sm_{r[k]}" if k == "sm" else f"`{r[k]}`" if k == "kernel" else str(r[k]) for k in keys) + " |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sm", type=int, action="append", help="compute capability as 86, 90 (repeatable; default 86 and 90)")
    ap.add_argument("--check", action="store_true", help="exit 1 if any kernel spills or uses 255 registers")
    ap.add_argument("--loaded", action="store_true", help="also load each cubin on this machine's GPU (needs one)")
    ap.add_argument("--only", default="", help="only kernels whose module.name contains this")
    ap.add_argument("--json", type=Path, help="write the rows to this file as JSON")
    args = ap.parse_args(argv)
    try:
        import triton.backends.nvidia  # noqa: F401
    except ImportError:
        print("triton has no NVIDIA backend here: nothing to compile", file=sys.stderr)
        return 2
    rows = all_rows(tuple(args.sm or (86, 90)), args.loaded, args.only)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    bad = problems(rows)
    for line in bad:
        print("FAIL " + line, file=sys.stderr)
    return 1 if (args.check and bad) else 0


if __name__ == "__main__":
    sys.exit(main())
