#include "deepmd/runtime/deep_pot.h"

#include <ATen/Parallel.h>
#include <mpi.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <unordered_set>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "deepmd/ops/exchange.h"
#include "deepmd/ops/plan.h"
#include "deepmd/runtime/archive.h"
#include "deepmd/runtime/atom_checks.h"
#include "deepmd/runtime/exception_status.h"
#include "deepmd/runtime/fault_injection.h"
#include "deepmd/runtime/neighbor_list.h"
#include "deepmd/runtime/neighbor_selection.h"
#include "deepmd/runtime/process_policy.h"

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

constexpr char kInsideExchangesPayload[] = "deepmd.runtime/failed-inside-exchanges";

struct DeepPot::Impl {
  Archive archive;
  DeepPotOptions options;
  torch::jit::Module regular;
  std::optional<torch::jit::Module> with_comm;  // loaded the first time several ranks need it
  const char* last_graph = "none";
  bool threads_configured = false;
  ComputeTimes times;
  NeighborSelection selection;
  bool sel_reported = false;  // the warning about neighbours beyond sel is given once
  SelOverflow sel_overflow;   // of the last rebuild

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
  absl::Status Prepare(const ComputeInput& in, bool& rebuilt);  // validation, rebuild when asked, per-step inputs
  void ReportSelOverflow(absl::Span<const int32_t> plan);
  c10::IValue RunGraph(bool atomic);  // throws what the graph throws
  absl::Status TakeOutputs(const c10::IValue& returned, const ComputeInput& in, ComputeOutput& out);
  void Warn(const std::string& message) const;
  int plan_rank = 0;  // this rank in the plan's communicator
};

void DeepPot::Impl::Warn(const std::string& message) const {
  if (plan_rank != 0) return;
  if (options.warn) {
    options.warn(message);
  } else {
    std::fprintf(stderr, "deepmd: warning: %s\n", message.c_str());
  }
}

absl::StatusOr<std::unique_ptr<DeepPot>> DeepPot::Load(const std::string& path, DeepPotOptions options) {
  try {
    absl::StatusOr<Archive> archive = Archive::Open(path);
    if (!archive.ok()) return archive.status();
    auto impl = std::make_unique<Impl>(*std::move(archive));
    impl->options = std::move(options);
    impl->selection = NeighborSelection::Of(impl->archive.metadata());
    absl::StatusOr<torch::jit::Module> regular = impl->archive.LoadGraph(Graph::kRegular);
    if (!regular.ok()) return regular.status();
    impl->regular = *std::move(regular);
    impl->regular.eval();
    return std::unique_ptr<DeepPot>(new DeepPot(std::move(impl)));
  } catch (...) {
    return StatusFromException(std::current_exception(), absl::StrCat("loading '", path, "'"));
  }
}

DeepPot::DeepPot(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeepPot::~DeepPot() = default;
const ArchiveMetadata& DeepPot::metadata() const { return impl_->archive.metadata(); }
const char* DeepPot::last_graph() const { return impl_->last_graph; }
int DeepPot::threads() const { return at::get_num_threads(); }
const ComputeTimes& DeepPot::times() const { return impl_->times; }
void DeepPot::reset_times() { impl_->times = ComputeTimes(); }

namespace {

size_t TensorBytes(const at::Tensor& t, std::unordered_set<const void*>& seen) {
  if (!t.defined() || !t.has_storage() || !seen.insert(t.storage().unsafeGetStorageImpl()).second) return 0;
  return t.storage().nbytes();
}

size_t ModuleBytes(const torch::jit::Module& module, std::unordered_set<const void*>& seen) {
  size_t bytes = 0;
  for (const auto& attribute : module.named_attributes(/*recurse=*/true)) {
    const c10::IValue& value = attribute.value;
    if (value.isTensor()) bytes += TensorBytes(value.toTensor(), seen);
    if (value.isTensorList()) {
      for (const at::Tensor& t : value.toTensorVector()) bytes += TensorBytes(t, seen);
    }
  }
  return bytes;
}

}  // namespace

size_t DeepPot::memory_bytes() const {
  const Impl& s = *impl_;
  std::unordered_set<const void*> seen;
  size_t bytes = s.archive.size_bytes() + ModuleBytes(s.regular, seen);
  if (s.with_comm) bytes += ModuleBytes(*s.with_comm, seen);
  for (const at::Tensor* t : {&s.atype, &s.nlist, &s.mapping, &s.plan, &s.coord, &s.spin, &s.fparam, &s.aparam}) {
    bytes += TensorBytes(*t, seen);
  }
  return bytes + (s.kept.capacity() + s.list.offsets.capacity() + s.list.neighbors.capacity()) * sizeof(int64_t);
}

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
  plan_rank = view ? view->rank() : 0;
  MaybeInjectFault("rebuild", plan_rank);
  if (!threads_configured && !HostChoseProcessPolicy()) {
    std::string warning;
    absl::StatusOr<ProcessPolicy> policy = PolicyFromEnvironment(multi_rank, &warning);
    if (!policy.ok()) return policy.status();
    ApplyProcessPolicy(*policy, /*by_host=*/false);
    if (!warning.empty()) Warn(warning);
  }
  threads_configured = true;
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
  if (!sel_reported) sel_overflow = selection.Count(list, absl::MakeConstSpan(c, 3 * nall_real), types, m.rcut);
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

absl::Status DeepPot::Impl::Prepare(const ComputeInput& in, bool& rebuilt) {
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
    rebuilt = true;
    sel_overflow = SelOverflow();
    absl::Status status = Rebuild(in);
    times.rebuild_seconds += SecondsSince(start);
    ++times.rebuilds;
    if (!status.ok()) return status;
  } else if (n != nall || in.nlocal != nlocal) {
    return Invalid(absl::StrCat("ago = ", in.ago, " but the system changed from ", nlocal, " + ", nall - nlocal, " to ",
                                in.nlocal, " + ", n - in.nlocal, " atoms; rebuild with ago = 0"));
  }
  return FillStep(in);
}

namespace {

// The communicator of a plan that spans several ranks while MPI runs; MPI_COMM_NULL otherwise. Only the
// header is read (O(1) per step).
MPI_Comm PlanCommunicator(absl::Span<const int32_t> plan) {
  if (plan.size() < ops::kHeaderWords || plan[ops::kMagic] != ops::kPlanMagic ||
      plan[ops::kVersion] != ops::kPlanVersion || plan[ops::kCommunicator] == ops::kNoCommunicator ||
      plan[ops::kSize] < 2) {
    return MPI_COMM_NULL;
  }
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized ? MPI_Comm_f2c(plan[ops::kCommunicator]) : MPI_COMM_NULL;
}

}  // namespace

absl::Status AgreeAcrossRanks(const absl::Status& local, absl::Span<const int32_t> plan) {
  return AgreeAcrossRanks(local, PlanCommunicator(plan));
}

void DeepPot::Impl::ReportSelOverflow(absl::Span<const int32_t> plan) {
  // Collective like the agreements: every rank rebuilt in this call (rebuilds are the caller's, alike
  // on every rank) and every rank stops counting once any rank has reported.
  int64_t atoms = sel_overflow.atoms, most = sel_overflow.most;
  if (MPI_Comm comm = PlanCommunicator(plan); comm != MPI_COMM_NULL) {
    MPI_Allreduce(&sel_overflow.atoms, &atoms, 1, MPI_INT64_T, MPI_SUM, comm);
    MPI_Allreduce(&sel_overflow.most, &most, 1, MPI_INT64_T, MPI_MAX, comm);
  }
  if (atoms == 0) return;
  sel_reported = true;
  const ArchiveMetadata& m = archive.metadata();
  Warn(absl::StrFormat(
      "'%s' keeps at most %s within rcut %g A (sel), but %d atom(s) have more (up to %d): the model ignores "
      "the farthest ones, as deepmd-kit does, so their energies and forces are those of a truncated "
      "neighbourhood. If that matters, use a model trained with a larger sel. (Reported once, at the first "
      "neighbour-list rebuild where it happens.)",
      archive.name(), selection.Describe(), m.rcut, atoms, most));
}

absl::Status CheckRunsOnRanks(const ArchiveMetadata& m, const std::string& name, int nranks) {
  if (nranks <= 1 || !m.has_message_passing || m.has_comm_artifact) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "'", name, "' passes messages between atoms but has no with-comm graph, so it cannot run on ", nranks,
      " MPI ranks. Re-export it with the with-comm graph (for DPA3: \"use_loc_mapping\": false), or run on one "
      "rank."));
}

bool PeersMayBeInExchange(const absl::Status& status) { return status.GetPayload(kInsideExchangesPayload).has_value(); }

void DeepPot::set_skin(double skin) {
  impl_->options.skin = skin;
  impl_->nall = -1;
}

absl::Status DeepPot::Compute(const ComputeInput& in, ComputeOutput& out) {
  Impl& s = *impl_;
  ++s.times.calls;
  Clock::time_point start = Clock::now();
  const double rebuild_before = s.times.rebuild_seconds;
  // On several ranks an error found on one rank must stop all of them here: otherwise its peers
  // would wait forever inside the graph's exchanges. Exceptions count as errors.
  bool rebuilt = false;
  absl::Status prepared;
  try {
    prepared = s.Prepare(in, rebuilt);
  } catch (...) {
    prepared = StatusFromException(std::current_exception(), "preparing the model's inputs");
  }
  absl::Status agreed = AgreeAcrossRanks(prepared, in.plan);
  if (agreed.ok() && rebuilt && !s.sel_reported) s.ReportSelOverflow(in.plan);
  s.times.inputs_seconds += SecondsSince(start) - (s.times.rebuild_seconds - rebuild_before);
  if (!agreed.ok()) {
    s.nall = -1;  // the cached topology may be half-built: rebuild on the next call
    return agreed;
  }

  start = Clock::now();
  const ops::ExchangeTotals exchanged_before = ops::exchange_totals();
  c10::IValue returned;
  std::optional<absl::Status> failure;
  try {
    returned = s.RunGraph(in.atomic);
  } catch (...) {
    failure = StatusFromException(std::current_exception(), "model evaluation failed");
  }
  const ops::ExchangeTotals& exchanged = ops::exchange_totals();
  s.times.exchange_forward_seconds += exchanged.forward_seconds - exchanged_before.forward_seconds;
  s.times.exchange_reverse_seconds += exchanged.reverse_seconds - exchanged_before.reverse_seconds;
  if (failure) {
    s.nall = -1;
    // Peers may be waiting in an exchange this rank will not reach: no agreement can follow.
    if (s.use_with_comm && s.multi_rank) {
      failure->SetPayload(kInsideExchangesPayload, absl::Cord(std::string(failure->message())));
      return *failure;
    }
    // The regular graph exchanges nothing: its peers reach the agreement on the outputs below.
    return AgreeAcrossRanks(*failure, in.plan);
  }
  s.times.graph_seconds += SecondsSince(start);
  start = Clock::now();
  s.last_graph = s.use_with_comm ? "with-comm" : "regular";
  // Every rank that got here has finished its exchanges, so one more agreement is safe.
  absl::Status outputs;
  try {
    outputs = s.TakeOutputs(returned, in, out);
  } catch (...) {
    outputs = StatusFromException(std::current_exception(), "reading the model's outputs");
  }
  absl::Status agreed_outputs = AgreeAcrossRanks(outputs, in.plan);
  s.times.outputs_seconds += SecondsSince(start);
  return agreed_outputs;
}

c10::IValue DeepPot::Impl::RunGraph(bool atomic) {
  const ArchiveMetadata& m = archive.metadata();
  std::vector<c10::IValue> inputs = {coord, atype};
  if (m.is_spin) inputs.push_back(spin);
  inputs.push_back(nlist);
  if (!use_with_comm) inputs.push_back(mapping.defined() ? c10::IValue(mapping) : c10::IValue());
  inputs.push_back(m.dim_fparam && !use_default_fparam ? c10::IValue(fparam) : c10::IValue());
  inputs.push_back(m.dim_aparam ? c10::IValue(aparam) : c10::IValue());
  inputs.push_back(atomic);
  if (use_with_comm) inputs.push_back(plan);
  // Plain interpretation: the profiling executor's differentiable subgraphs kept 60% more activations
  // alive and ran 20-40% slower on the realistic DPA3 (docs/performance.md).
  torch::jit::GraphOptimizerEnabledGuard plain_interpreter(options.optimize_graph);
  return use_with_comm ? with_comm->get_method("forward_lower_with_comm")(inputs)
                       : regular.get_method("forward_lower")(inputs);
}

absl::Status DeepPot::Impl::TakeOutputs(const c10::IValue& returned, const ComputeInput& in, ComputeOutput& out) {
  const ArchiveMetadata& m = archive.metadata();
  const int64_t n = static_cast<int64_t>(in.atype.size());
  const c10::Dict<c10::IValue, c10::IValue> result = returned.toGenericDict();
  // Back to the caller's rows; NULL atoms get zeros.
  const torch::Tensor force = result.at("force").toTensor().contiguous();
  const double* f = force.data_ptr<double>();
  out.force.assign(3 * n, 0.0);
  for (int64_t r = 0; r < nall_real; ++r) {
    for (int d = 0; d < 3; ++d) out.force[3 * kept[r] + d] = f[3 * r + d];
  }
  if (m.is_spin) {
    const torch::Tensor fm = result.at("force_mag").toTensor().contiguous();
    out.force_mag.assign(3 * n, 0.0);
    for (int64_t r = 0; r < nall_real; ++r) {
      for (int d = 0; d < 3; ++d) out.force_mag[3 * kept[r] + d] = fm.data_ptr<double>()[3 * r + d];
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
    for (int64_t r = 0; r < nall_real; ++r) {
      if (r < nloc_real) out.atom_energy[kept[r]] = ae.data_ptr<double>()[r];
      for (int k = 0; k < 9; ++k) out.atom_virial[9 * kept[r] + k] = av.data_ptr<double>()[9 * r + k];
    }
  }
  // A non-finite result is never a success.
  absl::Status finite = CheckFinite("energy", absl::MakeConstSpan(&out.energy, 1), 0, in.ids);
  if (finite.ok()) finite = CheckFinite("force", out.force, 3, in.ids);
  if (finite.ok()) finite = CheckFinite("virial", out.virial, 0, in.ids);
  if (finite.ok() && m.is_spin) finite = CheckFinite("magnetic force", out.force_mag, 3, in.ids);
  if (finite.ok() && in.atomic) finite = CheckFinite("per-atom energy", out.atom_energy, 1, in.ids);
  if (finite.ok() && in.atomic) finite = CheckFinite("per-atom virial", out.atom_virial, 9, in.ids);
  return finite;
}

}  // namespace deepmd::runtime
