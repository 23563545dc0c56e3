// The runtime's per-step cost against bare graph execution on the same tensors, the graph's forward
// pass alone, the neighbour list's build time per atom and the peak memory, for N atoms in a periodic
// cube at liquid-water density. Usage: runtime_benchmark ARCHIVE [--atoms=4000] [--steps=3]
// [--with_comm] [--json=FILE]. Writes a Markdown table; --json also writes JSON.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <sys/resource.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
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
ABSL_FLAG(bool, with_comm, false,
          "run the with-comm graph, ghosts filled by the self-exchange plan (a rank's work on several ranks, "
          "exchanges as local copies)");
ABSL_FLAG(bool, bare, true, "also time bare graph execution and the forward pass alone");

namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n == 0 ? 0 : n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

// A failed step would be timed as if it were one: stop with the runtime's message instead.
void ComputeOrExit(deepmd::runtime::DeepPot& pot, const deepmd::runtime::ComputeInput& in,
                   deepmd::runtime::ComputeOutput& out) {
  if (absl::Status s = pot.Compute(in, out); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    std::exit(1);
  }
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
  deepmd::runtime::DeepPotOptions options;
  options.with_comm_on_one_rank = absl::GetFlag(FLAGS_with_comm);
  auto pot = deepmd::runtime::DeepPot::Load(args[1], options);
  if (!pot.ok()) {
    std::fprintf(stderr, "%s\n", std::string(pot.status().message()).c_str());
    return 1;
  }
  const double rcut = (*pot)->metadata().rcut;
  auto images =
      *deepmd::runtime::MakePeriodicImages(coord, std::array<double, 3>{side, side, side}, {true, true, true}, rcut);
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
  if (options.with_comm_on_one_rank) {
    in.plan = images.plan;
  } else {
    in.mapping = images.owner;
  }
  deepmd::runtime::ComputeOutput out;
  t0 = std::chrono::steady_clock::now();
  ComputeOrExit(**pot, in, out);
  const double t_rebuild = Seconds(t0);
  in.ago = 1;
  ComputeOrExit(**pot, in, out);  // warm up

  // Bare graph execution on the same tensors, as the runtime runs it (plain interpreter), timed in
  // alternation with the runtime's steps so that both see the same machine; then the forward pass
  // alone (atomic energies without gradients) for the forward/backward split.
  const bool bare = absl::GetFlag(FLAGS_bare) && !options.with_comm_on_one_rank;
  torch::jit::GraphOptimizerEnabledGuard plain_interpreter(false);
  auto archive = *deepmd::runtime::Archive::Open(args[1]);
  torch::jit::Module graph = *archive.LoadGraph(deepmd::runtime::Graph::kRegular);
  graph.eval();  // as the runtime does
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64), i64 = torch::TensorOptions().dtype(torch::kInt64);
  torch::Tensor c = torch::from_blob(images.coord.data(), {1, nall, 3}, f64).clone();
  torch::Tensor owner = torch::from_blob(images.owner.data(), {1, nall}, i64).clone();
  torch::Tensor t = torch::tensor(std::vector<int64_t>(ext_types.begin(), ext_types.end()), i64).reshape({1, nall});
  torch::Tensor nlist = torch::empty({1, natoms, list.max_row()}, i64);
  list.ToPadded(list.max_row(), nlist.data_ptr<int64_t>());
  std::vector<c10::IValue> inputs = {c, t, nlist, owner, c10::IValue(), c10::IValue(), false};
  if (bare) graph.get_method("forward_lower")(inputs);  // warm up
  std::vector<double> step_times, bare_times;
  (*pot)->reset_times();
  // Alternating which goes first (ABBA): whichever runs second in a pair was measured up to 13% apart
  // from the first on this machine, for either, so the order must not favour one.
  auto time_runtime = [&] {
    t0 = std::chrono::steady_clock::now();
    ComputeOrExit(**pot, in, out);
    step_times.push_back(Seconds(t0));
  };
  auto time_bare = [&] {
    t0 = std::chrono::steady_clock::now();
    graph.get_method("forward_lower")(inputs);
    bare_times.push_back(Seconds(t0));
  };
  for (int i = 0; i < steps; ++i) {
    if (!bare) {
      time_runtime();
    } else if (i % 2 == 0) {
      time_runtime();
      time_bare();
    } else {
      time_bare();
      time_runtime();
    }
  }
  const double t_step = Median(step_times), t_bare = bare ? Median(bare_times) : 0;
  double t_forward = 0;
  if (bare) {
    torch::NoGradGuard no_grad;
    torch::jit::Method energies = graph.attr("model").toModule().get_method("atomic_energies");
    std::vector<c10::IValue> forward_inputs = {c, t, nlist, owner, c10::IValue(), c10::IValue(), c10::IValue()};
    energies(forward_inputs);  // warm up
    std::vector<double> forward_times;
    for (int i = 0; i < steps; ++i) {
      t0 = std::chrono::steady_clock::now();
      energies(forward_inputs);
      forward_times.push_back(Seconds(t0));
    }
    t_forward = Median(forward_times);
  }
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  const double peak_bytes = 1024.0 * usage.ru_maxrss;

  std::printf("%d atoms (%lld with images), %s, %d threads, median of %d steps\n\n", natoms,
              static_cast<long long>(nall), args[1], at::get_num_threads(), steps);
  std::printf("| what | time |\n|---|---|\n");
  std::printf("| runtime step without rebuild | %.1f ms |\n", t_step * 1e3);
  if (t_bare > 0) {
    std::printf("| bare graph execution (forward_lower) | %.1f ms |\n", t_bare * 1e3);
    std::printf("| runtime overhead | %.1f %% |\n", 100 * (t_step - t_bare) / t_bare);
    std::printf("| forward pass alone (no gradients) | %.1f ms |\n", t_forward * 1e3);
  }
  const deepmd::runtime::ComputeTimes& parts = (*pot)->times();
  std::printf("| of which graph call / inputs / outputs | %.1f / %.2f / %.2f ms |\n",
              parts.graph_seconds / parts.calls * 1e3, parts.inputs_seconds / parts.calls * 1e3,
              parts.outputs_seconds / parts.calls * 1e3);
  std::printf("| runtime step with rebuild | %.1f ms |\n", t_rebuild * 1e3);
  std::printf("| neighbour list build | %.2f us/atom (%.1f ms) |\n", t_nlist / natoms * 1e6, t_nlist * 1e3);
  std::printf("| peak memory | %.0f MB (%.0f kB/atom) |\n", peak_bytes / 1e6, peak_bytes / natoms / 1e3);
  if (!absl::GetFlag(FLAGS_json).empty()) {
    FILE* f = std::fopen(absl::GetFlag(FLAGS_json).c_str(), "w");
    std::fprintf(f,
                 "{\"atoms\": %d, \"rows\": %lld, \"with_comm\": %s, \"bare_s\": %.6e, \"forward_s\": %.6e, "
                 "\"step_s\": %.6e, \"rebuild_s\": %.6e, \"nlist_s\": %.6e, \"peak_rss_bytes\": %.0f}\n",
                 natoms, static_cast<long long>(nall), options.with_comm_on_one_rank ? "true" : "false", t_bare,
                 t_forward, t_step, t_rebuild, t_nlist, peak_bytes);
    std::fclose(f);
  }
  return 0;
}
