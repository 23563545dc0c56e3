"""Exports a model into a .pt2 archive (docs/model_archive.md): a deepmd-kit model file (.dp, .yaml,
or the model dict inside deepmd-kit's .pt2 / .pte), or a freshly initialised model from deepmd-kit's
training input (--config input.json, its `model` section; weights from --seed).

The archive holds the regular graph and, when the model's embeddings must cross ranks, the with-comm
graph. Before anything is written, both graphs are reloaded from their serialized bytes and the
with-comm graph is checked against the regular one on a periodic system whose ghosts travel several
hops (self-exchange plan). The archive is written beside the target and renamed into place, so a
failed export never leaves a half-written file.

Usage: export.py MODEL.{dp,yaml,pt2,pte} --out OUT.pt2 --ops-library libdeepmd_comm_ops.so
       export.py --config input.json [--seed N] [--save-dp MODEL.dp] --out OUT.pt2 --ops-library ...
(examples/models holds such inputs: the models the examples, tests and benchmarks run.)"""

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from typing import Callable, Optional

import torch

from deepmd.dpkit.serialization import UnsupportedModel, load_model_dict
from deepmd.models.model import RegularGraph, WithCommGraph
from deepmd.models.periodic import extend, random_system
from deepmd.models.spin import SpinRegularGraph, SpinWithCommGraph

FORMAT_VERSION = 1
REGULAR_ENTRY = "model/forward_lower.pt"
WITH_COMM_ENTRY = "model/extra/forward_lower_with_comm.pt"
# The layers' formulation in exported graphs: the fused kernels (deepmd/kernels) unless --reference-layers.
FUSED_LAYERS = True


def script_bytes(graph: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(graph), buffer)
    return buffer.getvalue()


def is_spin(model: torch.nn.Module) -> bool:
    return bool(getattr(model, "is_spin", False))


def graph_classes(model: torch.nn.Module):
    """(regular graph, with-comm graph) wrappers for this kind of model."""
    return (SpinRegularGraph, SpinWithCommGraph) if is_spin(model) else (RegularGraph, WithCommGraph)


def energy_model(model: torch.nn.Module):
    return model.backbone if is_spin(model) else model


def precision_name(model: torch.nn.Module) -> str:
    return "float32" if energy_model(model).descriptor.dtype == torch.float32 else "float64"


def metadata(model: torch.nn.Module, config: dict, has_comm: bool) -> dict:
    descriptor, fitting = energy_model(model).descriptor, energy_model(model).fitting
    widths = descriptor.exchanged_widths()
    spin = is_spin(model)
    if spin:  # real and virtual embeddings of an atom travel in one row
        widths = [2 * w for w in widths]
    return {
        "format_version": FORMAT_VERSION,
        "artifact_kind": "torchscript",
        "type_map": list(model.type_map),
        "ntypes": len(model.type_map),
        "rcut": model.rcut,
        "sel": list(model.sel),
        "nnei": sum(model.sel),
        "nlayers": descriptor.nlayers,
        "dim_fparam": fitting.dim_fparam,
        "dim_aparam": fitting.dim_aparam,
        "has_default_fparam": bool(getattr(fitting, "has_default_fparam", False)),
        "precision": precision_name(model),
        "is_spin": spin,
        **({"use_spin": list(model.use_spin), "virtual_scale": model.virtual_scale.tolist()} if spin else {}),
        "has_message_passing": bool(descriptor.has_message_passing),
        "has_message_passing_across_ranks": bool(widths),
        "has_comm_artifact": has_comm,
        "exchanged_feature_widths": widths,
        "graphs": {"regular": REGULAR_ENTRY, **({"with_comm": WITH_COMM_ENTRY} if has_comm else {})},
        "model_config": config,
    }


def check_with_comm(make_model: Callable[[], torch.nn.Module], regular: bytes, with_comm: bytes) -> float:
    """Largest difference between the two reloaded graphs on a multi-hop self-exchange system."""
    model = make_model()
    box = [0.8 * model.rcut, 0.9 * model.rcut, 1.1 * model.rcut]  # thinner than the cutoff
    pos, atype = random_system(10, box, len(model.type_map), seed=17, min_dist=1.0)
    s = extend(pos, atype, box, model.rcut)
    args = [s["coord"], s["atype"]]
    if is_spin(model):
        spins = torch.randn(pos.shape[0], 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        args.append(spins[s["mapping"][0]].unsqueeze(0))
    args.append(s["nlist"])
    fitting = energy_model(model).fitting
    fparam = torch.ones(1, fitting.dim_fparam, dtype=torch.float64) if fitting.dim_fparam else None
    aparam = torch.ones(1, s["nloc"], fitting.dim_aparam, dtype=torch.float64) if fitting.dim_aparam else None
    ref = torch.jit.load(io.BytesIO(regular)).forward_lower(*args, s["mapping"], fparam, aparam, True)
    out = torch.jit.load(io.BytesIO(with_comm)).forward_lower_with_comm(*args, fparam, aparam, True, s["plan"])
    worst = 0.0
    for key in [k for k in ("energy", "force", "force_mag", "virial", "atom_virial") if k in ref]:
        scale = max(1.0, float(ref[key].abs().max()))
        worst = max(worst, float((out[key] - ref[key]).abs().max()) / scale)
    return worst


def export_model(make_model: Callable[[], torch.nn.Module], config: dict, out_path: str,
                 extra_metadata: Optional[dict] = None) -> dict:
    """Scripts both graphs (each from a fresh model: the graphs install their own ghost fillers),
    checks the with-comm graph against the regular one, then writes the archive."""
    model = make_model()
    needs_comm = bool(energy_model(model).descriptor.exchanged_widths())
    regular_graph, with_comm_graph = graph_classes(model)
    regular = script_bytes(regular_graph(make_model()))
    with_comm = script_bytes(with_comm_graph(make_model())) if needs_comm else None
    if with_comm is not None:
        tolerance = 1e-10 if precision_name(model) == "float64" else 1e-5
        worst = check_with_comm(make_model, regular, with_comm)
        if not worst <= tolerance:
            raise RuntimeError(f"the with-comm graph differs from the regular graph by {worst:.3e} (relative) on a "
                               f"self-exchange system; tolerance {tolerance:.0e}. Nothing was written.")
    meta = metadata(model, config, with_comm is not None)
    meta.update(extra_metadata or {})
    write_archive(out_path, meta, regular, with_comm)
    return meta


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def descriptor_summary(descriptor: torch.nn.Module) -> dict:
    """What the archive says of the descriptor: read from the object (descriptor protocol)."""
    summary = {"type": getattr(descriptor, "type_name", type(descriptor).__name__), "rcut": float(descriptor.rcut),
               "sel": list(descriptor.sel), "dim_out": int(descriptor.dim_out), "nlayers": int(descriptor.nlayers),
               "exchanged_widths": list(descriptor.exchanged_widths())}
    children = getattr(descriptor, "children_list", None)
    if children is not None:
        summary["children"] = [descriptor_summary(c) for c in children]
    return summary


def export_deepmd_kit(path: str, out_path: str) -> dict:
    """A deepmd-kit model file (.dp, .yaml, .pt2 or .pte), imported exactly (deepmd/dpkit)."""
    tree = load_model_dict(path)
    source = {
        "file": os.path.basename(path),
        "sha256": sha256(path),
        "format": os.path.splitext(path)[1].lstrip(".").lower(),
        "software": tree.get("software"),
        "deepmd_kit_version": tree.get("version"),
        "backend": tree.get("backend"),
    }
    return export_tree(tree, source, out_path)


def export_input(config: dict, seed: int, out_path: str, config_path: str = "", save_dp: str = "") -> dict:
    """A freshly initialised model from deepmd-kit's training input (deepmd/dpkit/init.py)."""
    from deepmd.dpkit.init import model_dict_from_input, write_dp
    section = config.get("model", config)
    tree = {"software": "deepmd-gnn-mpi", "version": "random-init", "model": model_dict_from_input(section, seed),
            "model_def_script": section}
    if save_dp:
        write_dp(tree, save_dp)
    source = {"file": os.path.basename(config_path), "sha256": sha256(config_path) if config_path else None,
              "format": "input.json", "seed": seed, "initialisation": "random (untrained)"}
    return export_tree(tree, source, out_path)


def export_tree(tree: dict, source: dict, out_path: str) -> dict:
    from deepmd.dpkit.build import model_from_dict, set_layer_formulation
    model_node = tree["model"]
    model = model_from_dict(model_node)
    formulation = set_layer_formulation(model, FUSED_LAYERS)
    for layer, how in formulation.items():
        if how.startswith("reference: "):
            print(f"export: {layer}: no fused kernel for its options, {how}", file=sys.stderr)
        elif how.startswith("fused; "):  # part of the layer stays on the reference
            print(f"export: {layer}: {how}", file=sys.stderr)
    summary = descriptor_summary(energy_model(model).descriptor)
    graph_names = ["regular"] + (["with_comm"] if energy_model(model).descriptor.exchanged_widths() else [])
    summary["layer_formulation"] = {name: formulation for name in graph_names}
    backbone = model_node.get("backbone_model", model_node)  # spin models wrap a standard one
    summary["type"] = backbone.get("descriptor", {}).get("type", summary["type"])  # deepmd-kit's name
    extra = {"source": source, "descriptor": summary}
    config = tree.get("model_def_script") or {}

    def make_model():
        built = model_from_dict(model_node)
        set_layer_formulation(built, FUSED_LAYERS)
        return built

    return export_model(make_model, config, out_path, extra)


def content_hashes(entries) -> dict:
    """content_sha256 of metadata.json: the SHA-256 of every entry but metadata.json itself, which the
    runtime checks at load (a swapped, replaced or damaged graph is refused, naming the entry)."""
    return {name: hashlib.sha256(data).hexdigest() for name, data in entries}


def write_archive(out_path: str, meta: dict, regular: bytes, with_comm: Optional[bytes]) -> None:
    """Writes the archive beside its target and renames it into place (never a half-written file).
    The content hashes are computed here, from the bytes written, replacing any `meta` carried."""
    out_path = os.path.abspath(out_path)
    graphs = [(REGULAR_ENTRY, regular)] + ([(WITH_COMM_ENTRY, with_comm)] if with_comm is not None else [])
    meta = {**meta, "content_sha256": content_hashes(graphs)}
    staging = tempfile.mkdtemp(prefix=".export-", dir=os.path.dirname(out_path))
    try:
        # Same basename in the staging folder: the archive's top folder is named after the file.
        staged = os.path.join(staging, os.path.basename(out_path))
        writer = torch._C.PyTorchFileWriter(staged)
        for name, data in [("metadata.json", json.dumps(meta, indent=2).encode())] + graphs:
            writer.write_record(name, data, len(data))
        writer.write_end_of_file()
        del writer
        os.replace(staged, out_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="deepmd-kit model file: .dp, .yaml/.yml, .pt2 or .pte")
    parser.add_argument("--config", help="instead of a model file: deepmd-kit's training input (input.json); "
                        "the model is freshly initialised")
    parser.add_argument("--seed", type=int, default=1, help="with --config: the seed of the weights")
    parser.add_argument("--save-dp", default="", help="with --config: also write the model as a deepmd-kit .dp")
    parser.add_argument("--out", required=True, help="archive to write (.pt2)")
    parser.add_argument("--ops-library", required=True, help="libdeepmd_comm_ops.so")
    parser.add_argument("--reference-layers", action="store_true", help="keep deepmd-kit's reference formulation "
                        "of the layers instead of the fused kernels (deepmd/kernels)")
    args = parser.parse_args(argv)
    global FUSED_LAYERS
    FUSED_LAYERS = not args.reference_layers
    if (args.model is None) == (args.config is None):
        parser.error("give either a deepmd-kit model file or --config INPUT.json")
    torch.ops.load_library(args.ops_library)
    try:
        if args.model is not None:
            meta = export_deepmd_kit(args.model, args.out)
        else:
            with open(args.config) as f:
                config = json.load(f)
            if not isinstance(config, dict) or not ("model" in config or "fitting_net" in config):
                raise UnsupportedModel(f"{args.config}: not a deepmd-kit training input (no `model` section with "
                                       "`descriptor` and `fitting_net`); see examples/models")
            meta = export_input(config, args.seed, args.out, args.config, args.save_dp)
    except UnsupportedModel as e:
        print(f"export: {e}", file=sys.stderr)
        return 1
    except (KeyError, ValueError, RuntimeError, OSError) as e:
        print(f"export: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    graphs = ", ".join(meta["graphs"])
    kind = meta.get("descriptor", {}).get("type", "")
    print(f"wrote {args.out}: {kind + ' ' if kind else ''}{meta['type_map']} rcut {meta['rcut']} layers "
          f"{meta['nlayers']} {meta['precision']} graphs: {graphs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
