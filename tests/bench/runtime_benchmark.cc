// The runtime's per-step cost against bare graph execution on the same tensors, and the neighbour
// list's build time per atom. Usage: runtime_benchmark ARCHIVE [--atoms=4000] [--steps=10]
// Writes a Markdown table; --json=FILE also writes JSON.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/script.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "deepmd/runtime/archive.h"
#include "deepmd/runtime/deep_pot.h"
#include "deepmd/runtime/neighbor_list.h"
#include "deepmd/runtime/periodic_images.h"

ABSL_FLAG(int, atoms, 4000, "atoms (liquid-water number density, 0.1 / A^3)");
ABSL_FLAG(int, steps, 3, "timed steps without rebuild");
ABSL_FLAG(std::string, json, "", "also write JSON here");

namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::fprintf(stderr, "usage: runtime_benchmark ARCHIVE [--atoms=N] [--steps=N]\n");
    return 2;
  }
  const int natoms = absl::GetFlag(FLAGS_atoms), steps = absl::GetFlag(FLAGS_steps);
  const double side = std::cbrt(natoms / 0.1);
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> unit(0, side);
  // A jittered lattice: liquid-like density without overlapping atoms.
  const int per_side = static_cast<int>(std::ceil(std::cbrt(natoms)));
  std::vector<double> coord;
  std::vector<int> types;
  std::normal_distribution<double> jitter(0, 0.15);
  for (int i = 0; i < natoms; ++i) {
    const int x = i % per_side, y = (i / per_side) % per_side, z = i / (per_side * per_side);
    for (int d : {x, y, z}) coord.push_back((d + 0.5) * side / per_side + jitter(rng));
    types.push_back(i % 3 == 0 ? 0 : 1);
  }
  auto pot = deepmd::runtime::DeepPot::Load(args[1]);
  if (!pot.ok()) {
    std::fprintf(stderr, "%s\n", std::string(pot.status().message()).c_str());
    return 1;
  }
  const double rcut = (*pot)->metadata().rcut;
  auto images = *deepmd::runtime::MakePeriodicImages(coord, std::array<double, 3>{side, side, side}, {true, true, true}, rcut);
  const int64_t nall = static_cast<int64_t>(images.owner.size());
  std::vector<int> ext_types(nall);
  for (int64_t r = 0; r < nall; ++r) ext_types[r] = types[images.owner[r]];

  // Neighbour list build.
  deepmd::runtime::NeighborList list;
  auto t0 = std::chrono::steady_clock::now();
  const int builds = 5;
  for (int i = 0; i < builds; ++i) deepmd::runtime::BuildNeighborList(images.coord, natoms, rcut, list);
  const double t_nlist = Seconds(t0) / builds;

  // The runtime: one rebuild, then steps without rebuild.
  deepmd::runtime::ComputeInput in;
  in.coord = images.coord;
  in.atype = ext_types;
  in.nlocal = natoms;
  in.mapping = images.owner;
  deepmd::runtime::ComputeOutput out;
  t0 = std::chrono::steady_clock::now();
  if (auto s = (*pot)->Compute(in, out); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 1;
  }
  const double t_rebuild = Seconds(t0);
  in.ago = 1;
  (*pot)->Compute(in, out);  // warm up
  t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) (*pot)->Compute(in, out);
  const double t_step = Seconds(t0) / steps;

  // Bare graph execution on the same tensors.
  auto archive = *deepmd::runtime::Archive::Open(args[1]);
  torch::jit::Module graph = *archive.LoadGraph(deepmd::runtime::Graph::kRegular);
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64), i64 = torch::TensorOptions().dtype(torch::kInt64);
  torch::Tensor c = torch::from_blob(images.coord.data(), {1, nall, 3}, f64).clone();
  torch::Tensor owner = torch::from_blob(images.owner.data(), {1, nall}, i64).clone();
  torch::Tensor t = torch::tensor(std::vector<int64_t>(ext_types.begin(), ext_types.end()), i64).reshape({1, nall});
  torch::Tensor nlist = torch::empty({1, natoms, list.max_row()}, i64);
  list.ToPadded(list.max_row(), nlist.data_ptr<int64_t>());
  std::vector<c10::IValue> inputs = {c, t, nlist, owner, c10::IValue(), c10::IValue(), false};
  graph.get_method("forward_lower")(inputs);  // warm up
  t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) graph.get_method("forward_lower")(inputs);
  const double t_bare = Seconds(t0) / steps;

  std::printf("%d atoms (%lld with images), %s, %d threads, mean of %d steps\n\n", natoms,
              static_cast<long long>(nall), args[1], at::get_num_threads(), steps);
  std::printf("| what | time |\n|---|---|\n");
  std::printf("| bare graph execution (forward_lower) | %.1f ms |\n", t_bare * 1e3);
  std::printf("| runtime step without rebuild | %.1f ms |\n", t_step * 1e3);
  std::printf("| runtime overhead | %.1f %% |\n", 100 * (t_step - t_bare) / t_bare);
  std::printf("| runtime step with rebuild | %.1f ms |\n", t_rebuild * 1e3);
  std::printf("| neighbour list build | %.2f us/atom (%.1f ms) |\n", t_nlist / natoms * 1e6, t_nlist * 1e3);
  if (!absl::GetFlag(FLAGS_json).empty()) {
    FILE* f = std::fopen(absl::GetFlag(FLAGS_json).c_str(), "w");
    std::fprintf(f, "{\"atoms\": %d, \"bare_s\": %.6e, \"step_s\": %.6e, \"rebuild_s\": %.6e, \"nlist_s\": %.6e}\n",
                 natoms, t_bare, t_step, t_rebuild, t_nlist);
    std::fclose(f);
  }
  return 0;
}
