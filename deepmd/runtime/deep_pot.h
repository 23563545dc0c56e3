// DeepPot: evaluates a model archive on one rank's extended system (LAMMPS-free; errors as Status).
//
// Per call it dispatches, identically on every rank:
//   - the plan's communicator has several ranks and the model passes messages -> the
//     with-comm graph (ghost embeddings exchanged before every layer); without it in the archive,
//     every rank fails with a message saying how to re-export;
//   - otherwise -> the regular graph, ghosts through the ghost -> owner mapping (given, or derived from
//     a single-rank plan).
// On several ranks the ranks agree (one MPI_Allreduce of an int) before the graph runs, so an input
// error on any rank makes every rank return an error instead of leaving its peers in an exchange, and
// once more after it, so that a non-finite result on one rank is an error on every rank; every rank
// then returns the failing rank's message (rank_agreement.h). Exceptions (out of memory, LibTorch's
// errors) become errors like any other, agreed the same way, except inside the with-comm graph on
// several ranks (PeersMayBeInExchange).
// NULL atoms (type -1) are compacted out and the plan remapped; they get zero force. Everything that
// depends on the topology (compaction, plan, mapping, neighbour list with cutoff rcut + skin) is
// rebuilt only when `ago == 0`.
// Physically meaningless input and output are errors, never silent NaNs: atoms closer than
// kMinPairDistance (checked at every rebuild, on the neighbour list built then anyway) and a
// non-finite energy, force or virial from the graph (checked after every call, agreed across ranks).
// Atoms with more neighbours within rcut than the model selects (sel; the graph ignores the farthest)
// are counted at rebuilds and reported once, through DeepPotOptions::warn, with their count.
#ifndef DEEPMD_RUNTIME_DEEP_POT_H_
#define DEEPMD_RUNTIME_DEEP_POT_H_

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "deepmd/runtime/metadata.h"
#include "deepmd/runtime/rank_agreement.h"

namespace deepmd::runtime {

struct DeepPotOptions {
  double skin = 0.0;  // neighbour-list skin (Å): lists built at ago == 0 are reused while atoms move less
  // Check mode: run the with-comm graph even on one rank (ghosts filled by the self-exchange plan),
  // so that it can be compared with the regular graph.
  bool with_comm_on_one_rank = false;
  // TorchScript's graph optimisations (profiling executor, differentiable subgraphs). Off by default:
  // on these models they cost memory and time (docs/performance.md).
  bool optimize_graph = false;
  // Where warnings go (neighbours beyond sel, a capped DEEPMD_NUM_THREADS), called on one rank only
  // (the plan's rank 0); empty: stderr. LAMMPS: its logger (screen and log.lammps).
  std::function<void(const std::string&)> warn;
};

struct ComputeInput {
  absl::Span<const double> coord;     // [nall, 3]
  absl::Span<const int> atype;        // [nall]: model type, or -1 for NULL atoms (ignored)
  int nlocal = 0;                     // rows [0, nlocal) are owned
  absl::Span<const int32_t> plan;     // ghost-exchange plan of the nall rows (docs/exchange_plan.md), or empty
  absl::Span<const int64_t> mapping;  // ghost -> owner row (single rank), or empty
  absl::Span<const double> spin;      // [nall, 3], spin models only
  absl::Span<const double> fparam;    // [dim_fparam]
  absl::Span<const double> aparam;    // [nlocal, dim_aparam]
  int ago = 0;                        // steps since the last neighbour-list rebuild (0 = rebuild now)
  bool atomic = false;                // also per-atom energy and virial
  // [nall], optional: the caller's id of each row's atom, used only to name atoms in errors (LAMMPS:
  // atom->tag, so that a ghost is named by its owner's id). Empty: atoms are named by their row.
  absl::Span<const int64_t> ids;
};

struct ComputeOutput {
  double energy = 0;                // sum over owned atoms
  std::array<double, 9> virial{};   // -dE/d(strain), this rank's share
  std::vector<double> force;        // [nall, 3]; NULL atoms 0
  std::vector<double> force_mag;    // [nall, 3], spin models
  std::vector<double> atom_energy;  // [nlocal] when atomic
  std::vector<double> atom_virial;  // [nall, 9] when atomic
};

// Where a DeepPot's calls spent their time since the last reset: the benchmarks' step breakdown.
// A few clock reads per call.
struct ComputeTimes {
  int64_t calls = 0, rebuilds = 0;
  double rebuild_seconds = 0;           // at ago == 0: compaction, plan or mapping, neighbour list
  double neighbor_list_seconds = 0;     // the neighbour-list part of rebuild_seconds
  double inputs_seconds = 0;            // validation, per-step refills and the ranks' agreement
  double graph_seconds = 0;             // the TorchScript call: forward, backward and ghost exchanges
  double exchange_forward_seconds = 0;  // the part of graph_seconds in forward ghost exchanges (peers' waits
  double exchange_reverse_seconds = 0;  // included) and in reverse ones
  double outputs_seconds = 0;           // results back into the caller's rows
};

class DeepPot {
 public:
  static absl::StatusOr<std::unique_ptr<DeepPot>> Load(const std::string& path, DeepPotOptions options = {});
  ~DeepPot();

  const ArchiveMetadata& metadata() const;
  // The neighbour-list skin (MD engines know it only at their init); takes effect at the next call,
  // which rebuilds the topology.
  void set_skin(double skin);
  // Which graph the last call ran (for tests and logs): "regular" or "with-comm".
  const char* last_graph() const;
  // Intra-op threads the graphs run with on this rank (the process policy: the host's, or else the
  // default one applied at the first call, process_policy.h).
  int threads() const;
  const ComputeTimes& times() const;
  void reset_times();
  // Bytes this DeepPot holds between calls: the archive read into memory, the loaded graphs' tensors
  // (parameters, buffers, tensor attributes; shared storage once), the cached topology and input
  // tensors, the neighbour list. Not the graph's activations, which live only during a call.
  size_t memory_bytes() const;

  absl::Status Compute(const ComputeInput& input, ComputeOutput& output);

 private:
  struct Impl;
  explicit DeepPot(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// AgreeAcrossRanks (rank_agreement.h) over the plan's communicator when the plan spans several ranks:
// an error on any rank becomes, on every rank, that rank's error (every rank must call it).
absl::Status AgreeAcrossRanks(const absl::Status& local, absl::Span<const int32_t> plan);

// Whether the model can run on `nranks` ranks: one that passes messages needs its with-comm graph there.
absl::Status CheckRunsOnRanks(const ArchiveMetadata& metadata, const std::string& name, int nranks);

// Whether `status` is an error raised while this rank was inside a with-comm graph on several ranks.
// Its peers may then be waiting in one of the graph's ghost exchanges for a message that will never
// come, so no collective (not even an agreement) can follow: the caller must abort the job (LAMMPS:
// error->one, i.e. MPI_Abort) with this rank's message.
bool PeersMayBeInExchange(const absl::Status& status);

// For spin models: how far beyond rcut the list of real neighbours must reach, 2 x the largest
// virtual_scale * |S|: a virtual centre at r_i + d_i sees the virtual atom r_j + d_j within rcut when
// |r_j - r_i| <= rcut + |d_i| + |d_j|. On several ranks the ghost shell (rcut + skin) must reach it too.
double VirtualAtomMargin(const ArchiveMetadata& metadata, absl::Span<const int> atype, absl::Span<const double> spin);

}  // namespace deepmd::runtime

#endif  // DEEPMD_RUNTIME_DEEP_POT_H_
