"""Fused kernels (deepmd/kernels) against deepmd-kit's reference formulation, in the same run:
  1. the angle path of one repflow layer alone (forward + backward of its two outputs, eager; DPA3 only);
  2. the whole model's forward + backward (energy and forces) through the scripted regular graph: both
     formulations in one process, steps alternating (ABBA), so that a shared machine's load falls on
     both alike; peak memory from one step of each in a process of its own;
  3. end to end: both formulations exported (export.py, default and --reference-layers) and each
     archive's C++ runtime step timed by runtime_benchmark (its own water-density box), the two
     archives' runs alternating (ABBA), best run of each.
Models: deepmd/train/water_dpa3.json and examples/models/dpa3_realistic.json (and, asked for,
dpa3_production.json and dpa2_medium.json: deepmd-kit's examples/water/dpa3 and dpa2 medium inputs),
freshly initialised (seed 1). Rates are against the FMA peak in the model's precision. System:
deepmd-kit's water data_3 frame 0 replicated 2x2x2 (1,536 atoms). One thread, denormals flushed, and
glibc's malloc keeping freed memory, as the runtime runs (deepmd/runtime/host_memory.h): otherwise every
large activation is a fresh zero-filled mapping in every step, for both formulations.

bazel run //tests/bench:angle_benchmark [-- --out DIR --steps 3 --replicate 2 --models water_dpa3,...]"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np
import torch

MODELS = {"water_dpa3": "deepmd/train/water_dpa3.json", "dpa3_realistic": "examples/models/dpa3_realistic.json",
          "dpa3_production": "examples/models/dpa3_production.json", "dpa2_medium": "examples/models/dpa2_medium.json"}
DEFAULT_MODELS = "water_dpa3,dpa3_realistic"  # dpa3_production's reference needs ~17 MB/atom: --replicate 1
FORMULATIONS = ("reference", "fused")
# The runtime's process policy for the measured processes (one thread; malloc keeps freed memory).
ENV = {"DEEPMD_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MALLOC_MMAP_MAX_": "0",
       "MALLOC_TRIM_THRESHOLD_": "2147483647"}


def water_dir(root: str) -> str:
    for path in (os.path.join(os.path.dirname(root), "deepmd_kit_fixtures"),
                 os.path.join(os.path.dirname(root), "shared", "deepmd-kit")):
        if os.path.isdir(os.path.join(path, "data", "water", "data_3")):
            return os.path.join(path, "data", "water", "data_3")
    raise FileNotFoundError("deepmd-kit's water data (data/water/data_3) not found")


def system(root: str, replicate: int):
    """Frame 0 of data_3 replicated n x n x n: positions [N, 3], types [N], box lengths."""
    folder = water_dir(root)
    coord = np.load(os.path.join(folder, "set.000", "coord.npy"))[0].reshape(-1, 3)
    box = np.load(os.path.join(folder, "set.000", "box.npy"))[0].reshape(3, 3)
    atype = np.loadtxt(os.path.join(folder, "type.raw"), dtype=np.int64).reshape(-1)
    assert np.allclose(box, np.diag(np.diag(box))), "data_3's box is orthorhombic"
    lengths = np.diag(box)
    coord = coord - np.floor(coord / lengths) * lengths
    shifts = [np.array([a, b, c]) * lengths for a in range(replicate) for b in range(replicate)
              for c in range(replicate)]
    pos = np.concatenate([coord + s for s in shifts])
    return torch.from_numpy(pos), torch.from_numpy(np.tile(atype, len(shifts))), list(lengths * replicate)


def model_from_input(path: str, fused: bool):
    """A deepmd-kit training input freshly initialised (seed 1), every layer that has a fused kernel in
    the formulation asked for (layers with options the kernels lack run their reference either way)."""
    from deepmd.dpkit import build
    from deepmd.dpkit.init import model_dict_from_input
    with open(path) as f:
        model = build.model_from_dict(model_dict_from_input(json.load(f)["model"], 1))
    chosen = build.set_layer_formulation(model, fused)
    if fused:
        assert "fused" in chosen.values() and all(v.startswith("fused") or v.startswith("reference: ")
                                                  for v in chosen.values()), chosen
    else:
        assert set(chosen.values()) <= {"reference"}, chosen
    return model


def build_model(root: str, name: str, fused: bool):
    model = model_from_input(os.path.join(root, MODELS[name]), fused)
    layer = model.descriptor.layers[0]  # fused layers must engage
    assert getattr(layer, "fused", getattr(layer, "fused_attention", None)) == fused, name
    return model


def is_dpa3(name: str) -> bool:
    return not name.startswith("dpa2")


def peak_rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def graph_steps(args) -> dict:
    """Child process: the scripted regular graph's forward + backward. --formulation both: the two
    formulations' steps alternating (times); one formulation: a single step (its peak memory)."""
    from deepmd.models.model import RegularGraph
    from deepmd.models.periodic import extend
    torch.ops.load_library(args.ops_library)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # as the runtime (deepmd/runtime/process_policy.h)
    torch._C._set_graph_executor_optimize(False)  # the runtime's plain interpreter
    pos, atype, box = system(args.root, args.replicate)
    which = list(FORMULATIONS) if args.formulation == "both" else [args.formulation]
    runs = {}
    for f in which:
        model = build_model(args.root, args.one, f == "fused")
        s = extend(pos, atype, box, model.rcut)
        graph = torch.jit.script(RegularGraph(model))
        runs[f] = (lambda g=graph, s=s: g.forward_lower(s["coord"], s["atype"], s["nlist"], s["mapping"], None,
                                                          None, False))
    if len(which) == 1:
        runs[which[0]]()
        return {"natoms": int(pos.shape[0]), "peak_bytes": peak_rss()}
    energies = {f: float(run()["energy"].sum()) for f, run in runs.items()}  # warm up
    from tests.bench.flop_model import flops_per_atom
    flops = flops_per_atom(model, s["coord"][0], s["nlist"][0], int(pos.shape[0]), int(s["coord"].shape[1]))
    times: Dict[str, List[float]] = {f: [] for f in FORMULATIONS}
    for i in range(args.steps):
        for f in (FORMULATIONS if i % 2 == 0 else FORMULATIONS[::-1]):
            t0 = time.perf_counter()
            runs[f]()
            times[f].append(time.perf_counter() - t0)
    return {"natoms": int(pos.shape[0]), "energy": energies, "flops_per_atom": flops,
            "float64": model.descriptor.dtype == torch.float64,
            **{f + "_s": float(np.median(t)) for f, t in times.items()}}


def angle_path(layer, x: list, fused: bool, packed: torch.Tensor):
    """Forward + backward of the layer's angle path (edge-angle message and the angle update); the fused
    path on the packed angles (real pairs only), the layout the fused model keeps from its start."""
    node, node_ext, edge, angle, h2sw, sw, flat_index, nbr, a_mask, a_sw, full_mask = x[:11]
    edge = edge.detach().requires_grad_(True)
    angle = (packed if fused else angle).detach().requires_grad_(True)
    node_a, edge_a = layer.angle_inputs(node, edge, a_mask)
    if fused:
        reduced, angle_new = layer.fused_angle(angle, node_a, edge_a, a_mask, a_sw)
        eang = layer.edge_angle_finish(reduced, edge, full_mask)
    else:
        eang = layer.edge_angle_update(angle, node_a, edge_a, edge, a_sw, full_mask)
        aself = layer.act(layer.angle_self_linear.angle_form(angle, node_a, edge_a))
        angle_new = layer.combine(angle, [aself], layer.a_residual)
    loss = eang.sum() + angle_new.sum()
    return torch.autograd.grad([loss], [angle, edge])


def angle_benchmark(args) -> dict:
    """Child process: both formulations of layer 0's angle path on the layer's real inputs, alternating."""
    from deepmd.models.periodic import extend
    torch.ops.load_library(args.ops_library)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # as the runtime (deepmd/runtime/process_policy.h)
    name = args.one
    model = build_model(args.root, name, False)  # captures the padded angles; the fused path packs them
    pos, atype, box = system(args.root, args.replicate)
    s = extend(pos, atype, box, model.rcut)
    layer = model.descriptor.layers[0]
    captured = []
    original = type(layer).forward

    def spy(self, *a):
        if self is layer and not captured:
            captured.append(a)
        return original(self, *a)

    type(layer).forward = spy
    try:  # through the model, which formats the neighbour list (sorted, cut to sel) as the graphs do
        from deepmd.models.model import RegularGraph
        RegularGraph(model).forward_lower(s["coord"], s["atype"], s["nlist"], s["mapping"], None, None, False)
    finally:
        type(layer).forward = original
    from deepmd.dpkit import build
    build.set_layer_formulation(model, True)  # eager: both paths of the layer stay callable
    x = [t.detach() if isinstance(t, torch.Tensor) else t for t in captured[0]]
    angle = x[3]
    times: Dict[str, List[float]] = {f: [] for f in FORMULATIONS}
    from deepmd.dpkit.repflow_layer import pack_angles
    packed = pack_angles(angle, x[8])
    for f in FORMULATIONS:
        angle_path(layer, x, f == "fused", packed)  # warm up
    for i in range(args.steps):
        for f in (FORMULATIONS if i % 2 == 0 else FORMULATIONS[::-1]):
            t0 = time.perf_counter()
            angle_path(layer, x, f == "fused", packed)
            times[f].append(time.perf_counter() - t0)
    nloc = angle.shape[1]
    real = int((x[9] != 0).sum())
    return {"natoms": int(nloc), "angle_shape": list(angle.shape), "real_angle_slots_per_atom": real / nloc,
            **{f + "_s": float(np.median(t)) for f, t in times.items()}}


def child(args, name: str, formulation: str) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", name, "--formulation", formulation,
                          "--root", args.root, "--ops-library", args.ops_library, "--steps", str(args.steps),
                          "--replicate", str(args.replicate)], capture_output=True, text=True,
                         env={**os.environ, **ENV})
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def runtime_steps(args, name: str, natoms: int, work: str) -> Dict[str, dict]:
    """Both archives through runtime_benchmark, runs alternating (reference, fused, fused, reference);
    the faster run of each (step time; peak memory is the process's)."""
    archives = {}
    for f in FORMULATIONS:
        archives[f] = os.path.join(work, f"{name}_{f}.pt2")
        cmd = [sys.executable, "-m", "deepmd.tools.export", "--ops-library", args.ops_library, "--config",
               os.path.join(args.root, MODELS[name]), "--seed", "1", "--out", archives[f]]
        subprocess.run(cmd + (["--reference-layers"] if f == "reference" else []), check=True,
                       capture_output=True, env={**os.environ, "PYTHONPATH": args.root})
    best: Dict[str, dict] = {}
    for f in FORMULATIONS + FORMULATIONS[::-1]:
        result = os.path.join(work, f"{name}_{f}.json")
        subprocess.run([args.runtime_benchmark, archives[f], f"--atoms={natoms}", f"--steps={args.steps}",
                        "--bare=false", f"--json={result}"], check=True, capture_output=True,
                       env={**os.environ, **ENV})
        with open(result) as fh:
            r = json.load(fh)
        if f not in best or r["step_s"] < best[f]["step_s"]:
            best[f] = r
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", help="JSON of the built tools (python_bench.sh)")
    parser.add_argument("--out", default="bench_results")
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"of {', '.join(MODELS)}")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--replicate", type=int, default=2)
    parser.add_argument("--skip-runtime", action="store_true", help="skip the C++ runtime measurement")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--formulation", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--ops-library", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(angle_benchmark(args) if args.formulation == "angle" else graph_steps(args)))
        return 0
    tools = json.loads(args.tools)
    args.root, args.ops_library = tools["root"], tools["ops_library"]
    args.runtime_benchmark = tools["runtime_benchmark"]
    torch.ops.load_library(args.ops_library)
    peak = json.loads(subprocess.run([tools["fma_peak"]], check=True, capture_output=True, text=True).stdout)
    print(f"this machine's one-thread FMA peak (fma_peak): {peak['float32_gflops']:.1f} GFLOP/s float32, "
          f"{peak['float64_gflops']:.1f} float64", flush=True)
    out_dir = os.path.join(os.environ.get("BUILD_WORKING_DIRECTORY", "."), args.out)
    os.makedirs(out_dir, exist_ok=True)
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "torch": torch.__version__, "threads": 1, "fma_peak": peak}, "models": {}}
    lines = ["| model | what | atoms | reference | fused | speed-up | fused GFLOP/s (% of peak, model precision) |",
             "|---|---|---|---|---|---|---|"]

    def rate(step_s: float, natoms: int, flops_per_atom: float, float64: bool) -> str:
        gflops = flops_per_atom * natoms / step_s / 1e9
        return f"{gflops:.1f} ({100 * gflops / peak['float64_gflops' if float64 else 'float32_gflops']:.1f}%)"

    with tempfile.TemporaryDirectory() as work:
        for name in args.models.split(","):
            r: Dict[str, dict] = {}
            rows = 1
            if is_dpa3(name):
                a = child(args, name, "angle")
                r["angle_path"] = a
                n = a["natoms"]
                lines.append(f"| {name} | angle path of layer 0 (fwd + bwd; angles {a['angle_shape']}, "
                             f"{a['real_angle_slots_per_atom']:.1f} real slots/atom) | {n} | "
                             f"{a['reference_s'] / n * 1e6:.1f} µs/atom | {a['fused_s'] / n * 1e6:.1f} µs/atom | "
                             f"{a['reference_s'] / a['fused_s']:.1f}x | |")
                rows += 1
            g = child(args, name, "both")
            g.update({f + "_peak_bytes": child(args, name, f)["peak_bytes"] for f in FORMULATIONS})
            r["graph"] = g
            n = g["natoms"]
            lines.append(f"| {name} | whole model, Python graph (energy + forces) | {n} | "
                         f"{g['reference_s'] / n * 1e6:.0f} µs/atom-step, peak {g['reference_peak_bytes'] / 1e6:.0f} MB "
                         f"| {g['fused_s'] / n * 1e6:.0f} µs/atom-step, peak {g['fused_peak_bytes'] / 1e6:.0f} MB | "
                         f"{g['reference_s'] / g['fused_s']:.1f}x (memory "
                         f"{g['reference_peak_bytes'] / g['fused_peak_bytes']:.1f}x) | "
                         f"{rate(g['fused_s'], n, g['flops_per_atom'], g['float64'])} |")
            if not args.skip_runtime:
                c = runtime_steps(args, name, n, work)
                r["runtime"] = c
                cr, cf = c["reference"], c["fused"]
                lines.append(f"| {name} | C++ runtime step (runtime_benchmark) | {cr['atoms']} | "
                             f"{cr['step_s'] / cr['atoms'] * 1e6:.0f} µs/atom-step, peak "
                             f"{cr['peak_rss_bytes'] / 1e6:.0f} MB | {cf['step_s'] / cf['atoms'] * 1e6:.0f} µs/atom-step, "
                             f"peak {cf['peak_rss_bytes'] / 1e6:.0f} MB | {cr['step_s'] / cf['step_s']:.1f}x (memory "
                             f"{cr['peak_rss_bytes'] / cf['peak_rss_bytes']:.1f}x) | "
                             f"{rate(cf['step_s'], cf['atoms'], g['flops_per_atom'], g['float64'])} |")
                rows += 1
            results["models"][name] = r
            print("\n".join(lines[-rows:]), flush=True)
    with open(os.path.join(out_dir, "angle.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(out_dir, "angle.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
