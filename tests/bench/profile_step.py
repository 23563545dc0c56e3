"""Where a DPA3 or DPA2 step's time goes: the scripted regular graph's forward + backward (energy and
forces), its time per atom-step, its rate against the FLOP model (flop_model.py) and this machine's
one-thread FMA peak (fma_peak) in the model's precision, the process's peak memory, then torch's
profiler, operators sorted by their own time. One thread, denormals flushed to zero and glibc's
malloc keeping freed memory (the runtime's process policy; the process re-executes itself so that malloc
sees the variables at start-up). The profiler's own cost inflates element-wise operators several-fold:
confirm with `perf record` before acting on them.

bazel run //tests/bench:profile_step [-- --model water_dpa3 --formulation fused --steps 5 --replicate 2
                                         --rows 25 --dp examples/water/water_dpa3.dp
                                         --config examples/models/dpa2_medium.json]"""

import argparse
import json
import os
import resource
import subprocess
import sys

ENV = {"DEEPMD_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MALLOC_MMAP_MAX_": "0",
       "MALLOC_TRIM_THRESHOLD_": "2147483647"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", help="JSON of the built tools (python_bench.sh)")
    parser.add_argument("--model", default="water_dpa3", help="a config of angle_benchmark.MODELS")
    parser.add_argument("--dp", help="a deepmd-kit model file instead (e.g. examples/water/water_dpa3.dp)")
    parser.add_argument("--config", help="a deepmd-kit training input instead, freshly initialised (seed 1)")
    parser.add_argument("--formulation", default="fused", choices=("fused", "reference"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--replicate", type=int, default=2)
    parser.add_argument("--rows", type=int, default=25, help="operators printed")
    parser.add_argument("--shapes", action="store_true", help="operators grouped by their input shapes too")
    parser.add_argument("--only", help="with --shapes: the rows of this operator only (e.g. aten::mul)")
    args = parser.parse_args(argv)
    if any(os.environ.get(k) != v for k, v in ENV.items()):  # malloc reads them at start-up
        os.execve(sys.executable, [sys.executable, "-m", "tests.bench.profile_step"] + sys.argv[1:],
                  {**os.environ, **ENV})
    import time

    import torch
    from deepmd.dpkit import build
    from deepmd.models.model import RegularGraph
    from deepmd.models.periodic import extend
    from tests.bench.angle_benchmark import MODELS, build_model, model_from_input, system
    from tests.bench.flop_model import flops_per_atom
    if not args.dp and not args.config and args.model not in MODELS:
        parser.error(f"--model {args.model!r}: one of {', '.join(MODELS)} (or --dp FILE, --config FILE)")
    tools = json.loads(args.tools)
    root = tools["root"]
    torch.ops.load_library(tools["ops_library"])
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # as the runtime's process policy (deepmd/runtime/process_policy.h)
    torch._C._set_graph_executor_optimize(False)  # the runtime's plain interpreter
    fused = args.formulation == "fused"
    here = os.environ.get("BUILD_WORKING_DIRECTORY", root)
    if args.dp:
        model = build.load_model(os.path.join(here, args.dp))
        build.set_layer_formulation(model, fused)
    elif args.config:
        model = model_from_input(os.path.join(here, args.config), fused)
    else:
        model = build_model(root, args.model, fused)
    pos, atype, box = system(root, args.replicate)
    s = extend(pos, atype, box, model.rcut)
    graph = torch.jit.script(RegularGraph(model))

    def step():
        return graph.forward_lower(s["coord"], s["atype"], s["nlist"], s["mapping"], None, None, False)

    for _ in range(2):
        step()
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    per_step = (time.perf_counter() - t0) / args.steps
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / args.steps
    natoms = int(pos.shape[0])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"{args.dp or args.config or args.model}, {args.formulation}, {natoms} atoms: {per_step * 1e3:.1f} "
          f"ms/step ({per_step / natoms * 1e6:.1f} us/atom-step), one thread, {faults:.0f} page faults/step, "
          f"process peak {peak_mb:.0f} MB ({peak_mb * 1e3 / natoms:.0f} kB/atom, the Python process included)")
    weights = next(m.w for m in model.descriptor.layers[0].modules() if hasattr(m, "w"))
    precision = "float64" if weights.dtype == torch.float64 else "float32"
    peak = json.loads(subprocess.run([tools["fma_peak"]], check=True, capture_output=True, text=True).stdout)
    flops = flops_per_atom(model, s["coord"][0], s["nlist"][0], natoms, int(s["coord"].shape[1]))
    rate = flops * natoms / per_step / 1e9
    print(f"FLOP model: {flops / 1e6:.2f} MFLOP/atom-step -> {rate:.1f} GFLOP/s, "
          f"{100 * rate / peak[precision + '_gflops']:.1f}% of this machine's one-thread {precision} FMA peak "
          f"({peak[precision + '_gflops']:.1f} GFLOP/s)")
    with torch.autograd.profiler.profile(record_shapes=args.shapes) as prof:
        for _ in range(args.steps):
            step()
    averages = prof.key_averages(group_by_input_shape=args.shapes)
    if args.only:
        rows = sorted((e for e in averages if e.key == args.only), key=lambda e: -e.self_cpu_time_total)
        for e in rows[:args.rows]:
            print(f"{e.self_cpu_time_total / 1e3 / args.steps:9.2f} ms/step {e.count // args.steps:5d} calls/step  "
                  f"{e.input_shapes}")
    else:
        print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
