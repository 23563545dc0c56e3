#include "deepmd/runtime/deep_pot.h"

#include <ATen/Parallel.h>
#include <mpi.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "deepmd/ops/plan.h"
#include "deepmd/runtime/archive.h"
#include "deepmd/runtime/atom_checks.h"
#include "deepmd/runtime/host_memory.h"
#include "deepmd/runtime/neighbor_list.h"

namespace deepmd::runtime {
namespace {

const auto kF64 = torch::TensorOptions().dtype(torch::kFloat64);
const auto kI64 = torch::TensorOptions().dtype(torch::kInt64);

absl::Status Invalid(absl::string_view what) { return absl::InvalidArgumentError(what); }

using Clock = std::chrono::steady_clock;
double SecondsSince(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

}  // namespace

double VirtualAtomMargin(const ArchiveMetadata& m, absl::Span<const int> atype, absl::Span<const double> spin) {
  double most = 0;
  for (size_t i = 0; i < atype.size(); ++i) {
    if (atype[i] < 0 || !m.use_spin[atype[i]]) continue;
    const double* s = &spin[3 * i];
    most = std::max(most, m.virtual_scale[atype[i]] * std::sqrt(s[0] * s[0] + s[1] * s[1] + s[2] * s[2]));
  }
  return 2 * most;
}

absl::Status ConfigureThreads(bool multi_rank) {
  const char* env = std::getenv("DEEPMD_NUM_THREADS");
  if (env == nullptr || *env == '\0') {
    if (multi_rank) at::set_num_threads(1);
    return absl::OkStatus();
  }
  int threads = 0;
  if (!absl::SimpleAtoi(env, &threads) || threads < 1) {
    return Invalid(absl::StrCat("DEEPMD_NUM_THREADS='", env,
                                "' is not a positive integer: set it to the number of threads per rank (e.g. 1), "
                                "or unset it"));
  }
  const int hardware = static_cast<int>(std::thread::hardware_concurrency());  // 0: unknown
  if (hardware > 0 && threads > hardware) {
    std::fprintf(stderr,
                 "deepmd: warning: DEEPMD_NUM_THREADS=%d is more than the %d hardware threads of this machine; "
                 "using %d\n",
                 threads, hardware, hardware);
    threads = hardware;
  }
  at::set_num_threads(threads);
  return absl::OkStatus();
}

constexpr char kPeerFailurePayload[] = "deepmd.runtime/peer-failure";
constexpr char kInsideExchangesPayload[] = "deepmd.runtime/failed-inside-exchanges";

struct DeepPot::Impl {
  Archive archive;
  DeepPotOptions options;
  torch::jit::Module regular;
  std::optional<torch::jit::Module> with_comm;  // loaded the first time several ranks need it
  const char* last_graph = "none";
  bool threads_configured = false;
  ComputeTimes times;

  // Topology, rebuilt when ago == 0.
  int64_t nall = -1, nlocal = -1;        // as given
  int64_t nall_real = 0, nloc_real = 0;  // without NULL atoms
  std::vector<int64_t> kept;             // compacted row -> original row
  bool use_with_comm = false;
  bool multi_rank = false;                    // the plan spans several ranks
  torch::Tensor atype, nlist, mapping, plan;  // compacted
  torch::Tensor coord, spin, fparam, aparam;  // compacted, refilled every step
  bool use_default_fparam = false;            // no fparam given: the model's default_fparam applies
  NeighborList list;

  explicit Impl(Archive a) : archive(std::move(a)) {}

  absl::Status Rebuild(const ComputeInput& in);
  absl::Status FillStep(const ComputeInput& in);
  absl::Status Prepare(const ComputeInput& in);  // validation, rebuild when asked, per-step inputs
};

absl::StatusOr<std::unique_ptr<DeepPot>> DeepPot::Load(const std::string& path, DeepPotOptions options) {
  absl::StatusOr<Archive> archive = Archive::Open(path);
  if (!archive.ok()) return archive.status();
  KeepFreedMemory();
  auto impl = std::make_unique<Impl>(*std::move(archive));
  impl->options = options;
  absl::StatusOr<torch::jit::Module> regular = impl->archive.LoadGraph(Graph::kRegular);
  if (!regular.ok()) return regular.status();
  impl->regular = *std::move(regular);
  impl->regular.eval();
  return std::unique_ptr<DeepPot>(new DeepPot(std::move(impl)));
}

DeepPot::DeepPot(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeepPot::~DeepPot() = default;
const ArchiveMetadata& DeepPot::metadata() const { return impl_->archive.metadata(); }
const char* DeepPot::last_graph() const { return impl_->last_graph; }
int DeepPot::threads() const { return at::get_num_threads(); }
const ComputeTimes& DeepPot::times() const { return impl_->times; }
void DeepPot::reset_times() { impl_->times = ComputeTimes(); }

absl::Status DeepPot::Impl::Rebuild(const ComputeInput& in) {
  const ArchiveMetadata& m = archive.metadata();
  const int64_t n = static_cast<int64_t>(in.atype.size());
  const int ntypes = static_cast<int>(m.type_map.size());
  nall = n;
  nlocal = in.nlocal;
  // Compaction: drop NULL atoms, keep order (owned rows stay first).
  std::vector<int32_t> new_row(n, -1);
  kept.clear();
  for (int64_t i = 0; i < n; ++i) {
    const int t = in.atype[i];
    if (t < -1 || t >= ntypes) {
      return Invalid(absl::StrCat(AtomName(in.ids, i), " has type ", t, "; this model has types 0..", ntypes - 1,
                                  " and -1 for atoms it ignores (NULL)"));
    }
    if (t >= 0) {
      new_row[i] = static_cast<int32_t>(kept.size());
      kept.push_back(i);
    }
  }
  nall_real = static_cast<int64_t>(kept.size());
  nloc_real = 0;
  for (int64_t i = 0; i < in.nlocal; ++i) nloc_real += in.atype[i] >= 0;

  // Dispatch (identical on every rank: it depends only on the plan's size and the archive).
  std::optional<ops::PlanView> view;
  if (!in.plan.empty()) {
    absl::StatusOr<ops::PlanView> parsed = ops::PlanView::Parse(in.plan);
    if (!parsed.ok()) return parsed.status();
    if (parsed->nrows() != n || parsed->nlocal() != in.nlocal) {
      return Invalid(absl::StrCat("the ghost-exchange plan describes ", parsed->nlocal(), " + ", parsed->nghost(),
                                  " rows but the system has ", in.nlocal, " + ", n - in.nlocal, " atoms"));
    }
    view = *parsed;
  }
  multi_rank = view && view->size() > 1;
  if (!threads_configured) {
    if (absl::Status st = ConfigureThreads(multi_rank); !st.ok()) return st;
    threads_configured = true;
  }
  // A model that passes messages needs its ghosts' embeddings from their owners: on several ranks only
  // the with-comm graph can do that (whatever the archive says about crossing ranks).
  use_with_comm = (multi_rank && m.has_message_passing) ||
                  (options.with_comm_on_one_rank && view && m.has_message_passing_across_ranks);
  if (use_with_comm && !m.has_comm_artifact && !multi_rank) {
    return absl::FailedPreconditionError(absl::StrCat("'", archive.name(), "' has no with-comm graph to check"));
  }
  if (multi_rank) {
    if (absl::Status st = CheckRunsOnRanks(m, archive.name(), view->size()); !st.ok()) return st;
  }
  if (use_with_comm && !with_comm) {
    absl::StatusOr<torch::jit::Module> graph = archive.LoadGraph(Graph::kWithComm);
    if (!graph.ok()) return graph.status();
    with_comm = *std::move(graph);
    with_comm->eval();
  }

  // Plan (with-comm) or mapping (regular), in compacted rows.
  plan = torch::Tensor();
  mapping = torch::Tensor();
  if (use_with_comm) {
    absl::StatusOr<std::vector<int32_t>> compact = ops::CompactPlan(*view, new_row);
    if (!compact.ok()) return compact.status();
    plan = torch::tensor(*compact, torch::TensorOptions().dtype(torch::kInt32));
  } else {
    std::vector<int64_t> owner;
    if (!in.mapping.empty()) {
      if (static_cast<int64_t>(in.mapping.size()) != n) {
        return Invalid(absl::StrCat("mapping has ", in.mapping.size(), " entries for ", n, " atoms"));
      }
      owner.assign(in.mapping.begin(), in.mapping.end());
    } else if (view && !multi_rank) {
      absl::StatusOr<std::vector<int64_t>> owners = ops::SelfPlanOwners(*view);
      if (!owners.ok()) return owners.status();
      owner = *std::move(owners);
    }
    if (!owner.empty()) {
      std::vector<int64_t> compact(nall_real);
      for (int64_t r = 0; r < nall_real; ++r) {
        const int64_t o = owner[kept[r]];
        if (o < 0 || o >= in.nlocal || new_row[o] < 0) {
          return Invalid(absl::StrCat("mapping: atom ", kept[r], " maps to ", o, ", which is not an owned atom of the ",
                                      "same type"));
        }
        compact[r] = new_row[o];
      }
      mapping = torch::tensor(compact, kI64).reshape({1, nall_real});
    } else if (nall_real == nloc_real) {
      mapping = torch::arange(nall_real, kI64).reshape({1, nall_real});  // no ghosts: every atom is its own
    } else if (m.has_message_passing) {
      return Invalid(
          "this model passes messages between atoms: on one rank it needs the ghost -> owner mapping or a "
          "single-rank ghost-exchange plan to know which atom each ghost is an image of");
    }
  }

  // Types, neighbour list (cutoff rcut + skin, reused until the next rebuild).
  std::vector<int64_t> types(nall_real);
  for (int64_t r = 0; r < nall_real; ++r) types[r] = in.atype[kept[r]];
  atype = torch::tensor(types, kI64).reshape({1, nall_real});
  coord = torch::empty({1, nall_real, 3}, kF64);
  if (m.is_spin) spin = torch::empty({1, nall_real, 3}, kF64);
  if (m.dim_fparam > 0) fparam = torch::empty({1, m.dim_fparam}, kF64);
  if (m.dim_aparam > 0) aparam = torch::empty({1, nloc_real, m.dim_aparam}, kF64);
  double* c = coord.data_ptr<double>();
  for (int64_t r = 0; r < nall_real; ++r) {
    for (int d = 0; d < 3; ++d) c[3 * r + d] = in.coord[3 * kept[r] + d];
  }
  // Spin models see virtual atoms up to virtual_scale * |S| away from their real atoms; the list of
  // real neighbours must reach that much further so that no virtual neighbour within rcut is missed.
  double margin = 0;
  if (m.is_spin && static_cast<int64_t>(in.spin.size()) == 3 * n) margin = VirtualAtomMargin(m, in.atype, in.spin);
  const Clock::time_point list_start = Clock::now();
  BuildNeighborList(absl::MakeConstSpan(c, 3 * nall_real), nloc_real, m.rcut + options.skin + margin, list);
  nlist = torch::empty({1, nloc_real, std::max<int64_t>(list.max_row(), 1)}, kI64);
  list.ToPadded(nlist.size(2), nlist.data_ptr<int64_t>());
  times.neighbor_list_seconds += SecondsSince(list_start);
  // Overlapping atoms: the closest pair of the list just built (pairs with an owned atom; on several
  // ranks each pair is seen by a rank that owns one of its atoms, and the ranks then agree).
  if (list.closest_i >= 0) {
    return CheckPairDistance(std::sqrt(list.closest_r2), kept[list.closest_i], kept[list.closest_j], in.ids);
  }
  return absl::OkStatus();
}

absl::Status DeepPot::Impl::FillStep(const ComputeInput& in) {
  const ArchiveMetadata& m = archive.metadata();
  double* c = coord.data_ptr<double>();
  for (int64_t r = 0; r < nall_real; ++r) {
    for (int d = 0; d < 3; ++d) {
      c[3 * r + d] = in.coord[3 * kept[r] + d];
    }
  }
  if (m.is_spin) {
    if (static_cast<int64_t>(in.spin.size()) != 3 * nall) {
      return Invalid(
          absl::StrCat("spin has ", in.spin.size(), " values; a spin model needs 3 per atom (", 3 * nall, ")"));
    }
    double* s = spin.data_ptr<double>();
    for (int64_t r = 0; r < nall_real; ++r) {
      for (int d = 0; d < 3; ++d) s[3 * r + d] = in.spin[3 * kept[r] + d];
    }
  }
  const bool default_fparam = in.fparam.empty() && m.has_default_fparam;
  if (static_cast<int>(in.fparam.size()) != m.dim_fparam && !default_fparam) {
    return Invalid(absl::StrCat("fparam has ", in.fparam.size(), " values; the model takes ", m.dim_fparam));
  }
  use_default_fparam = default_fparam;
  if (m.dim_fparam > 0 && !default_fparam) std::copy(in.fparam.begin(), in.fparam.end(), fparam.data_ptr<double>());
  if (m.dim_aparam > 0 || !in.aparam.empty()) {
    if (static_cast<int64_t>(in.aparam.size()) != in.nlocal * m.dim_aparam) {
      return Invalid(absl::StrCat("aparam has ", in.aparam.size(), " values; the model takes ", m.dim_aparam,
                                  " per owned atom (", in.nlocal * m.dim_aparam, ")"));
    }
    double* a = aparam.data_ptr<double>();
    for (int64_t r = 0; r < nloc_real; ++r) {
      for (int k = 0; k < m.dim_aparam; ++k) a[m.dim_aparam * r + k] = in.aparam[m.dim_aparam * kept[r] + k];
    }
  }
  return absl::OkStatus();
}

absl::Status DeepPot::Impl::Prepare(const ComputeInput& in) {
  const int64_t n = static_cast<int64_t>(in.atype.size());
  if (!in.ids.empty() && static_cast<int64_t>(in.ids.size()) != n) {
    return Invalid(absl::StrCat("ids has ", in.ids.size(), " entries for ", n, " atoms (one per atom, or none)"));
  }
  if (static_cast<int64_t>(in.coord.size()) != 3 * n) {
    return Invalid(absl::StrCat("coord has ", in.coord.size(), " values for ", n, " atoms (need 3 per atom)"));
  }
  if (in.nlocal < 0 || in.nlocal > n) return Invalid(absl::StrCat("nlocal ", in.nlocal, " is outside [0, ", n, "]"));
  for (int64_t k = 0; k < 3 * n; ++k) {
    if (!std::isfinite(in.coord[k])) {
      return Invalid(absl::StrCat(AtomName(in.ids, k / 3), " has a non-finite coordinate"));
    }
  }
  if (in.ago == 0 || nall < 0) {
    const Clock::time_point start = Clock::now();
    absl::Status rebuilt = Rebuild(in);
    times.rebuild_seconds += SecondsSince(start);
    ++times.rebuilds;
    if (!rebuilt.ok()) return rebuilt;
  } else if (n != nall || in.nlocal != nlocal) {
    return Invalid(absl::StrCat("ago = ", in.ago, " but the system changed from ", nlocal, " + ", nall - nlocal, " to ",
                                in.nlocal, " + ", n - in.nlocal, " atoms; rebuild with ago = 0"));
  }
  return FillStep(in);
}

absl::Status AgreeAcrossRanks(const absl::Status& local, absl::Span<const int32_t> plan) {
  // Only the header is read (O(1) per step): the communicator, this rank and the size.
  if (plan.size() < ops::kHeaderWords || plan[ops::kMagic] != ops::kPlanMagic ||
      plan[ops::kVersion] != ops::kPlanVersion || plan[ops::kCommunicator] == ops::kNoCommunicator ||
      plan[ops::kSize] < 2) {
    return local;
  }
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return local;
  MPI_Comm comm = MPI_Comm_f2c(plan[ops::kCommunicator]);
  int failed_rank = local.ok() ? -1 : plan[ops::kRank], first_failed = -1;
  if (MPI_Allreduce(&failed_rank, &first_failed, 1, MPI_INT, MPI_MAX, comm) != MPI_SUCCESS) return local;
  if (!local.ok() || first_failed < 0) return local;
  absl::Status peer = absl::FailedPreconditionError(
      absl::StrCat("rank ", first_failed,
                   " could not evaluate its atoms (its own message says why), so every rank stops "
                   "before the collective ghost exchanges"));
  peer.SetPayload(kPeerFailurePayload, absl::Cord(std::to_string(first_failed)));
  return peer;
}

absl::Status CheckRunsOnRanks(const ArchiveMetadata& m, const std::string& name, int nranks) {
  if (nranks <= 1 || !m.has_message_passing || m.has_comm_artifact) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "'", name, "' passes messages between atoms but has no with-comm graph, so it cannot run on ", nranks,
      " MPI ranks. Re-export it with the with-comm graph (for DPA3: \"use_loc_mapping\": false), or run on one "
      "rank."));
}

bool IsPeerFailure(const absl::Status& status) { return status.GetPayload(kPeerFailurePayload).has_value(); }

bool PeersMayBeInExchange(const absl::Status& status) { return status.GetPayload(kInsideExchangesPayload).has_value(); }

void DeepPot::set_skin(double skin) {
  impl_->options.skin = skin;
  impl_->nall = -1;
}

absl::Status DeepPot::Compute(const ComputeInput& in, ComputeOutput& out) {
  Impl& s = *impl_;
  const ArchiveMetadata& m = s.archive.metadata();
  const int64_t n = static_cast<int64_t>(in.atype.size());
  ++s.times.calls;
  Clock::time_point start = Clock::now();
  const double rebuild_before = s.times.rebuild_seconds;
  // On several ranks an error found on one rank must stop all of them here: otherwise its peers
  // would wait forever inside the graph's exchanges.
  absl::Status agreed = AgreeAcrossRanks(s.Prepare(in), in.plan);
  s.times.inputs_seconds += SecondsSince(start) - (s.times.rebuild_seconds - rebuild_before);
  if (!agreed.ok()) {
    s.nall = -1;  // the cached topology may be half-built: rebuild on the next call
    return agreed;
  }

  start = Clock::now();
  std::vector<c10::IValue> inputs = {s.coord, s.atype};
  if (m.is_spin) inputs.push_back(s.spin);
  inputs.push_back(s.nlist);
  if (!s.use_with_comm) inputs.push_back(s.mapping.defined() ? c10::IValue(s.mapping) : c10::IValue());
  inputs.push_back(m.dim_fparam && !s.use_default_fparam ? c10::IValue(s.fparam) : c10::IValue());
  inputs.push_back(m.dim_aparam ? c10::IValue(s.aparam) : c10::IValue());
  inputs.push_back(in.atomic);
  if (s.use_with_comm) inputs.push_back(s.plan);
  c10::IValue returned;
  // Plain interpretation: the profiling executor's differentiable subgraphs kept 60% more activations
  // alive and ran 20-40% slower on the realistic DPA3 (docs/performance.md).
  torch::jit::GraphOptimizerEnabledGuard plain_interpreter(s.options.optimize_graph);
  std::optional<std::string> failure;
  try {
    returned = s.use_with_comm ? s.with_comm->get_method("forward_lower_with_comm")(inputs)
                               : s.regular.get_method("forward_lower")(inputs);
  } catch (const c10::Error& e) {
    failure = e.what_without_backtrace();
  } catch (const std::exception& e) {  // TorchScript's own exceptions (JITException) are not c10::Errors
    failure = e.what();
  }
  if (failure) {
    absl::Status status = absl::InternalError(absl::StrCat("model evaluation failed: ", *failure));
    s.nall = -1;
    // Peers may be waiting in an exchange this rank will not reach: no agreement can follow.
    if (s.use_with_comm && s.multi_rank) {
      status.SetPayload(kInsideExchangesPayload, absl::Cord(*failure));
      return status;
    }
    // The regular graph exchanges nothing: its peers reach the agreement on the outputs below.
    return AgreeAcrossRanks(status, in.plan);
  }
  s.times.graph_seconds += SecondsSince(start);
  start = Clock::now();
  const c10::Dict<c10::IValue, c10::IValue> result = returned.toGenericDict();
  s.last_graph = s.use_with_comm ? "with-comm" : "regular";

  // Back to the caller's rows; NULL atoms get zeros.
  const torch::Tensor force = result.at("force").toTensor().contiguous();
  const double* f = force.data_ptr<double>();
  out.force.assign(3 * n, 0.0);
  for (int64_t r = 0; r < s.nall_real; ++r) {
    for (int d = 0; d < 3; ++d) out.force[3 * s.kept[r] + d] = f[3 * r + d];
  }
  if (m.is_spin) {
    const torch::Tensor fm = result.at("force_mag").toTensor().contiguous();
    out.force_mag.assign(3 * n, 0.0);
    for (int64_t r = 0; r < s.nall_real; ++r) {
      for (int d = 0; d < 3; ++d) out.force_mag[3 * s.kept[r] + d] = fm.data_ptr<double>()[3 * r + d];
    }
  }
  out.energy = result.at("energy").toTensor().item<double>();
  const torch::Tensor virial = result.at("virial").toTensor().contiguous();
  for (int k = 0; k < 9; ++k) out.virial[k] = virial.data_ptr<double>()[k];
  if (in.atomic) {
    const torch::Tensor ae = result.at("atom_energy").toTensor().contiguous();
    const torch::Tensor av = result.at("atom_virial").toTensor().contiguous();
    out.atom_energy.assign(in.nlocal, 0.0);
    out.atom_virial.assign(9 * n, 0.0);
    for (int64_t r = 0; r < s.nall_real; ++r) {
      if (r < s.nloc_real) out.atom_energy[s.kept[r]] = ae.data_ptr<double>()[r];
      for (int k = 0; k < 9; ++k) out.atom_virial[9 * s.kept[r] + k] = av.data_ptr<double>()[9 * r + k];
    }
  }
  // A non-finite result is never a success; on several ranks every rank learns of it (every rank that
  // got here has finished its exchanges, so one more agreement is safe).
  absl::Status finite = CheckFinite("energy", absl::MakeConstSpan(&out.energy, 1), 0, in.ids);
  if (finite.ok()) finite = CheckFinite("force", out.force, 3, in.ids);
  if (finite.ok()) finite = CheckFinite("virial", out.virial, 0, in.ids);
  if (finite.ok() && m.is_spin) finite = CheckFinite("magnetic force", out.force_mag, 3, in.ids);
  if (finite.ok() && in.atomic) finite = CheckFinite("per-atom energy", out.atom_energy, 1, in.ids);
  if (finite.ok() && in.atomic) finite = CheckFinite("per-atom virial", out.atom_virial, 9, in.ids);
  absl::Status agreed_outputs = AgreeAcrossRanks(finite, in.plan);
  s.times.outputs_seconds += SecondsSince(start);
  return agreed_outputs;
}

}  // namespace deepmd::runtime
