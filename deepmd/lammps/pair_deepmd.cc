#include "deepmd/lammps/pair_deepmd.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <limits>
#include <string>
#include <typeinfo>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "atom.h"
#include "comm.h"
#include "compute.h"
#include "deepmd/lammps/deviation_file.h"
#include "deepmd/lammps/lammps_compat.h"
#include "deepmd/runtime/exception_status.h"
#include "deepmd/runtime/fault_injection.h"
#include "deepmd/runtime/process_policy.h"
#include "deepmd/runtime/rank_agreement.h"
#include "error.h"
#include "fix.h"
#include "force.h"
#include "memory.h"
#include "modify.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

using deepmd::runtime::ComputeOutput;

namespace LAMMPS_NS {
namespace {

constexpr int kCentroidAvailable = 1;  // Pair::centroidstressflag: CENTROID_AVAIL (enum not in Debian's headers)

// LAMMPS's own exceptions (error->all: every rank throws; error->one: the job aborts) must pass: their
// message is out already. Debian does not ship their header, so they are told by their type's name.
bool IsLammpsException(const std::exception& e) {
  return std::string(typeid(e).name()).find("LAMMPS_NS") != std::string::npos;
}

}  // namespace

PairDeepMD::PairDeepMD(LAMMPS* lmp) : Pair(lmp) {
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;  // the model's virial includes every many-body term
  centroidstressflag = kCentroidAvailable;
  pppmflag = 1;  // kspace_style pppm alongside (deepmd-kit's long-range recipe): extract("cut_coul")
  // Doubles per atom of swap discovery; settings() raises these for spins and model deviation.
  comm_forward = comm_reverse = deepmd::lammps::SwapPattern::kWordsPerRow;
  MPI_Comm_dup(world, &plan_comm_);
}

PairDeepMD::~PairDeepMD() {
  if (models_) profile_.WriteIfRequested();
  if (deviation_file_) fclose(deviation_file_);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (plan_comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&plan_comm_);
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(scale_);
  }
}

const deepmd::runtime::ArchiveMetadata& PairDeepMD::metadata() const { return models_->model(0).metadata(); }

void PairDeepMD::Collectively(const char* where, const std::function<void()>& body) {
  absl::Status status;
  try {
    body();
  } catch (const std::exception& e) {
    if (IsLammpsException(e)) throw;
    status = deepmd::runtime::StatusFromException(std::current_exception(), where);
  } catch (...) {
    status = deepmd::runtime::StatusFromException(std::current_exception(), where);
  }
  StopIfAnyRankFailed(status, /*agreed=*/false);
}

void PairDeepMD::settings(int narg, char** arg) {
  Collectively("pair_style", [&] { Settings(narg, arg); });
  // Collective, so after the ranks agreed that every one loaded its models.
  if (options_.deviation_output()) OpenDeviationFile();
}

void PairDeepMD::coeff(int narg, char** arg) {
  Collectively("pair_coeff", [&] { Coeff(narg, arg); });
}

void PairDeepMD::init_style() {
  Collectively("init", [&] { InitStyle(); });
}

void PairDeepMD::compute(int eflag, int vflag) {
  // The runtime's failures arrive agreed (StopIfAnyRankFailed); an exception escaping elsewhere may have
  // left peers waiting in a communication this rank will not join, so it aborts the job.
  try {
    Compute(eflag, vflag);
  } catch (const std::exception& e) {
    if (IsLammpsException(e)) throw;
    Abort(deepmd::runtime::StatusFromException(std::current_exception(), "compute"));
  } catch (...) {
    Abort(deepmd::runtime::StatusFromException(std::current_exception(), "compute"));
  }
}

void PairDeepMD::Settings(int narg, char** arg) {
  deepmd::runtime::MaybeInjectFault("settings", comm->me);
  std::vector<std::string> args(arg, arg + narg);
  absl::StatusOr<deepmd::lammps::PairStyleOptions> options = deepmd::lammps::ParsePairStyle(args);
  if (!options.ok()) error->all(FLERR, std::string(options.status().message()));
  options_ = std::move(*options);
  if (comm->me == 0) {
    for (const std::string& warning : options_.warnings) error->warning(FLERR, warning);
  }
  for (const std::string& path : options_.models) {
    if (!std::ifstream(path).good()) {
      error->all(FLERR, absl::StrCat("pair_style ", force->pair_style, ": '", path,
                                     "' is neither a readable model archive nor a keyword (keywords: ",
                                     deepmd::lammps::PairStyleKeywords(), ")"));
    }
  }

  // The process-wide policy (malloc, threads of LibTorch and OpenBLAS), chosen here for the whole job.
  std::string warning;
  absl::StatusOr<deepmd::runtime::ProcessPolicy> policy =
      deepmd::runtime::PolicyFromEnvironment(comm->nprocs > 1, &warning);
  if (!policy.ok()) error->all(FLERR, absl::StrCat("pair_style ", force->pair_style, ": ", policy.status().message()));
  deepmd::runtime::ApplyProcessPolicy(*policy);
  if (!warning.empty() && comm->me == 0) error->warning(FLERR, warning);

  deepmd::runtime::DeepPotOptions runtime_options;
  runtime_options.skin = neighbor->skin;
  // The runtime warns on rank 0 only (neighbours beyond sel): into LAMMPS's screen and log.
  runtime_options.warn = [this](const std::string& message) { error->warning(FLERR, message); };
  absl::StatusOr<std::unique_ptr<deepmd::runtime::ModelDeviation>> models =
      deepmd::runtime::ModelDeviation::Load(options_.models, runtime_options);
  if (!models.ok())
    error->all(FLERR, absl::StrFormat("pair_style %s: %s", force->pair_style, models.status().message()));
  models_ = std::move(*models);
  load_logged_ = false;
  const auto& m = metadata();
  if (m.is_spin != spin_style()) {
    error->all(FLERR, absl::StrFormat("'%s' is %sa spin model: use pair_style %s", options_.models[0],
                                      m.is_spin ? "" : "not ", m.is_spin ? "deepmd/spin" : "deepmd"));
  }
  // Parameters from computes and fixes are checked at init, when those exist.
  if (!options_.fparam_per_step() && static_cast<int>(options_.fparam.size()) != m.dim_fparam &&
      !(options_.fparam.empty() && m.has_default_fparam)) {
    error->all(FLERR, absl::StrFormat("the model takes %d frame parameters (pair_style ... fparam V1 V2 ...), %d given",
                                      m.dim_fparam, options_.fparam.size()));
  }
  if (options_.aparam_compute.empty() && static_cast<int>(options_.aparam.size()) != m.dim_aparam) {
    error->all(FLERR,
               absl::StrFormat("the model takes %d atomic parameters (pair_style ... aparam V1 V2 ...), %d given",
                               m.dim_aparam, options_.aparam.size()));
  }
  const int nmodels = static_cast<int>(models_->size());
  // Doubles per atom in our pair comm: swap discovery's, 4 (spins), 3 per model (deviation), 3 (fm).
  constexpr int kDiscovery = deepmd::lammps::SwapPattern::kWordsPerRow;
  comm_forward = std::max(kDiscovery, spin_style() ? 4 : 0);
  comm_reverse = std::max({kDiscovery, nmodels > 1 ? 3 * nmodels : 0, spin_style() ? 3 : 0});
  outputs_.assign(nmodels, ComputeOutput());
  model_generation_.assign(nmodels, -1);
  cut_coul_ = models_->rcut();
  cached_nall_ = -1;
}

void PairDeepMD::OpenDeviationFile() {
  if (deviation_file_) fclose(deviation_file_);
  deviation_file_ = nullptr;
  int opened = 1;
  if (comm->me == 0) {
    deviation_file_ = fopen(options_.out_file.c_str(), "w");
    opened = deviation_file_ != nullptr;
    if (opened) fputs(deepmd::lammps::DeviationFileHeader().c_str(), deviation_file_);
  }
  MPI_Bcast(&opened, 1, MPI_INT, 0, world);
  if (!opened)
    error->all(FLERR, absl::StrFormat("cannot open the model deviation file '%s' for writing", options_.out_file));
}

void PairDeepMD::Coeff(int narg, char** arg) {
  if (!models_) error->all(FLERR, std::string("pair_coeff before pair_style deepmd has loaded a model"));
  if (narg < 2) {
    error->all(FLERR, absl::StrFormat("pair_coeff for %s takes '* *' and one element name (or NULL) per atom type",
                                      force->pair_style));
  }
  absl::Status covers = deepmd::lammps::CheckCoversAllTypes(arg[0], arg[1], atom->ntypes);
  if (!covers.ok()) error->all(FLERR, std::string(covers.message()));
  std::vector<std::string> names(arg + 2, arg + narg);
  absl::StatusOr<deepmd::lammps::TypeMapping> types =
      deepmd::lammps::MapTypes(names, metadata().type_map, atom->ntypes);
  if (!types.ok()) error->all(FLERR, std::string(types.status().message()));
  if (comm->me == 0 && !types->warning.empty()) error->warning(FLERR, types->warning);
  model_type_ = std::move(types->model_type);
  scale_type_ = 0;
  for (int t = atom->ntypes; t >= 1; --t) {
    if (model_type_[t] >= 0) scale_type_ = t;
  }

  if (!allocated) {
    allocated = 1;
    const int n = atom->ntypes;
    memory->create(setflag, n + 1, n + 1, "pair:setflag");
    memory->create(cutsq, n + 1, n + 1, "pair:cutsq");
    memory->create(scale_, n + 1, n + 1, "pair:scale");
  }
  for (int i = 1; i <= atom->ntypes; ++i) {
    for (int j = i; j <= atom->ntypes; ++j) setflag[i][j] = 1, scale_[i][j] = 1.0;
  }
  cached_nall_ = -1;
}

void PairDeepMD::InitStyle() {
  const char* style = force->pair_style;
  if (force->newton_pair == 0) {
    error->all(FLERR,
               absl::StrFormat(
                   "pair_style %s needs 'newton on' (newton pair on): forces on ghost atoms are sent home by LAMMPS's "
                   "reverse communication. Remove 'newton off' from the input",
                   style));
  }
  if (strcmp(update->unit_style, "metal") != 0) {
    error->all(FLERR,
               absl::StrFormat(
                   "pair_style %s needs 'units metal' (Å, eV, ps), the units of deepmd models; the input uses '%s'",
                   style, update->unit_style));
  }
  for (size_t k = 0; k < models_->size(); ++k) {
    absl::Status runs =
        deepmd::runtime::CheckRunsOnRanks(models_->model(k).metadata(), options_.models[k], comm->nprocs);
    if (!runs.ok()) error->all(FLERR, absl::StrCat("pair_style ", style, ": ", runs.message()));
  }
  models_->set_skin(neighbor->skin);
  profile_.Reset(comm->me);
  model_generation_.assign(models_->size(), -1);
  cached_nall_ = -1;
  // No LAMMPS neighbour list is requested: the runtime builds its own at every rebuild.
  BindParameterSources();
}

double PairDeepMD::init_one(int i, int j) {
  // Also what fix adapt's reinit() calls after changing "scale": the model is one many-body energy, so
  // one factor scales it, and every pair of the types it sees must carry the same.
  scale_[j][i] = scale_[i][j];
  if (model_type_[i] >= 0 && model_type_[j] >= 0 && scale_[i][j] != scale_[scale_type_][scale_type_]) {
    error->all(FLERR, absl::StrFormat("pair %s: 'scale' is %g for atom types %d %d but %g for %d %d: the model is "
                                      "one many-body energy, so one factor scales it; adapt every type pair "
                                      "(fix adapt ... pair %s scale * * v_NAME)",
                                      force->pair_style, scale_[i][j], i, j, scale_[scale_type_][scale_type_],
                                      scale_type_, scale_type_, force->pair_style));
  }
  // The largest cutoff of all models, whichever comes first: LAMMPS sizes the ghost shell from it.
  const double rcut = models_->rcut();
  cutsq[i][j] = cutsq[j][i] = rcut * rcut;
  return rcut;
}

void PairDeepMD::RebuildTopology() {
  const int nlocal = atom->nlocal, nghost = atom->nghost, nall = nlocal + nghost;
  const auto start = deepmd::lammps::StepProfile::Clock::now();
  // Rounds until every rank's stages agree with its peers' (swap_pattern.h); one for periodic boxes.
  comm_mode_ = CommMode::kDiscoverSwaps;
  swaps_.Begin();
  int changed_and_stages[2], rounds = 0;
  do {
    ++rounds;
    swaps_.BeginForward();
    deepmd::lammps::ForwardComm(comm, this);
    swaps_.BeginReverse();
    deepmd::lammps::ReverseComm(comm, this);
    const int mine[2] = {swaps_.EndRound() ? 1 : 0, swaps_.num_stages()};
    MPI_Allreduce(mine, changed_and_stages, 2, MPI_INT, MPI_MAX, world);
  } while (swaps_.AnotherRound(changed_and_stages[0] != 0));
  comm_mode_ = CommMode::kNone;
  // Local work only until the ranks agree, so that a failure here (out of memory, ...) stops all.
  absl::Status status;
  try {
    absl::StatusOr<std::vector<int32_t>> plan =
        swaps_.BuildPlan(MPI_Comm_c2f(plan_comm_), comm->me, comm->nprocs, nlocal, nghost, changed_and_stages[1]);
    if (plan.ok()) plan_ = *std::move(plan);
    status = plan.status();
    atype_.resize(nall);
    const int* type = atom->type;
    for (int i = 0; i < nall; ++i) atype_[i] = model_type_[type[i]];
    ids_.assign(atom->tag_enable ? nall : 0, 0);  // without ids (atom_modify id no) errors name rows
    for (size_t i = 0; i < ids_.size(); ++i) ids_[i] = static_cast<int64_t>(atom->tag[i]);
    const int dim_aparam = metadata().dim_aparam;
    aparam_.resize(static_cast<size_t>(nlocal) * dim_aparam);
    for (int i = 0; i < nlocal && dim_aparam > 0; ++i) {
      std::copy(options_.aparam.begin(), options_.aparam.end(), aparam_.begin() + static_cast<size_t>(i) * dim_aparam);
    }
  } catch (...) {
    status = deepmd::runtime::StatusFromException(std::current_exception(), "rebuilding the topology");
  }
  StopIfAnyRankFailed(status, /*agreed=*/false);
  profile_.AddPlanDiscovery(start, rounds);

  input_.atype = atype_;
  input_.ids = ids_;
  input_.plan = plan_;
  input_.aparam = aparam_;
  input_.fparam = options_.fparam;
  CheckGhostCutoff();
  cached_nall_ = nall;
  ++topology_generation_;
}

void PairDeepMD::CheckGhostCutoff() {
  // Pairs within rcut (+ margin) at any step until the next rebuild were within that + skin at this one;
  // every model of a deviation builds its lists on the same ghosts, so the farthest-reaching one counts.
  double reach = 0, margin = 0;
  for (size_t k = 0; k < models_->size(); ++k) {
    const auto& m = models_->model(k).metadata();
    const double model_margin = GhostMargin(m);
    if (m.rcut + model_margin > reach) reach = m.rcut + model_margin, margin = model_margin;
  }
  if (spin_style()) {  // margins depend on the spins of each rank's atoms
    double local[2] = {reach, margin}, most[2];
    MPI_Allreduce(local, most, 2, MPI_DOUBLE, MPI_MAX, world);
    reach = most[0], margin = most[1];
  }
  const double needed = reach + neighbor->skin;
  const double ghost_cutoff = std::max(neighbor->cutneighmax, comm->cutghostuser);
  if (ghost_cutoff < needed * (1 - 1e-12)) {
    error->all(
        FLERR,
        absl::StrFormat(
            "pair_style %s: ghost atoms reach %.4f Å but the model%s need%s %.4f Å (rcut %g + skin %g%s): "
            "add 'comm_modify cutoff %.4f'",
            force->pair_style, ghost_cutoff, models_->size() > 1 ? "s" : "", models_->size() > 1 ? "" : "s", needed,
            reach - margin, neighbor->skin,
            margin > 0 ? absl::StrFormat(" + virtual-atom margin %.4f (2 x virtual_scale |S|)", margin) : "", needed));
  }
}

void PairDeepMD::Compute(int eflag, int vflag) {
  ev_init(eflag, vflag);
  const int nlocal = atom->nlocal, nall = nlocal + atom->nghost;
  profile_.Begin(models_->model(0));
  GatherSpins(nall);
  const bool rebuild = neighbor->ago == 0 || nall != cached_nall_;
  if (rebuild) RebuildTopology();
  UpdateParameters();
  input_.coord = absl::MakeConstSpan(nall > 0 ? atom->x[0] : nullptr, 3 * static_cast<size_t>(nall));
  input_.nlocal = nlocal;
  input_.atomic = eflag_atom || vflag_atom || cvflag_atom;
  const bool deviation_step = options_.deviation_output() && update->ntimestep % options_.out_freq == 0;
  RunModels(deviation_step);
  if (!load_logged_) LogWhatRuns();
  deepmd::runtime::MaybeInjectFault("compute", comm->me);
  AccumulateOutputs(outputs_[0]);
  ScatterMagneticForces(outputs_[0]);
  if (deviation_step) WriteDeviation();
  profile_.End(models_->model(0), rebuild, nlocal, nall - nlocal);
}

void PairDeepMD::LogWhatRuns() {
  load_logged_ = true;
  if (comm->me != 0) return;
  const auto& pot = models_->model(0);
  const auto& m = pot.metadata();
  std::string graphs = m.has_comm_artifact ? "regular, with-comm" : "regular";
  utils::logmesg(
      lmp,
      absl::StrFormat("pair_style %s: %s: %s%stype map %s, rcut %g A, %d message-passing layer(s); "
                      "graphs in the archive: %s; running the %s graph on %d MPI rank(s)%s; "
                      "process: %s\n",
                      force->pair_style, options_.models[0], m.descriptor_type, m.descriptor_type.empty() ? "" : ", ",
                      absl::StrJoin(m.type_map, " "), m.rcut, m.nlayers, graphs, pot.last_graph(), comm->nprocs,
                      models_->size() > 1 ? absl::StrFormat(" (+%d models for the deviation, largest rcut %g A)",
                                                            models_->size() - 1, models_->rcut())
                                          : "",
                      deepmd::runtime::DescribeProcessPolicy()));
}

void PairDeepMD::RunModels(bool deviation_step) {
  const size_t nmodels = deviation_step ? models_->size() : 1;
  absl::Status status;
  for (size_t k = 0; k < nmodels && status.ok(); ++k) {
    // A model that skipped steps since the last rebuild has an older topology cached: rebuild it.
    input_.ago = model_generation_[k] == topology_generation_ ? 1 : 0;
    status = models_->model(k).Compute(input_, outputs_[k]);
    if (status.ok()) model_generation_[k] = topology_generation_;
  }
  StopIfAnyRankFailed(status, /*agreed=*/true);
}

double PairDeepMD::output_scale() const { return scale_type_ > 0 ? scale_[scale_type_][scale_type_] : 1.0; }

void PairDeepMD::AccumulateOutputs(const ComputeOutput& out) {
  const int nlocal = atom->nlocal, nall = nlocal + atom->nghost;
  const double s = output_scale();
  double** f = atom->f;
  for (int i = 0; i < nall; ++i) {
    for (int d = 0; d < 3; ++d) f[i][d] += s * out.force[3 * i + d];
  }
  if (eflag_global) eng_vdwl += s * out.energy;
  // The runtime's 3x3 tensors are row-major with [a][b] = F_a r_b; LAMMPS's xy is r_x F_y = [y][x].
  constexpr int kVoigt[6] = {0, 4, 8, 3, 6, 7};              // xx yy zz xy xz yz
  constexpr int kCentroid[9] = {0, 4, 8, 3, 6, 7, 1, 2, 5};  // ... then yx zx zy
  if (vflag_global) {
    for (int c = 0; c < 6; ++c) virial[c] += s * out.virial[kVoigt[c]];
  }
  if (eflag_atom) {
    for (int i = 0; i < nlocal; ++i) eatom[i] += s * out.atom_energy[i];
  }
  if (vflag_atom) {
    for (int i = 0; i < nall; ++i) {
      for (int c = 0; c < 6; ++c) vatom[i][c] += s * out.atom_virial[9 * i + kVoigt[c]];
    }
  }
  if (cvflag_atom) {
    for (int i = 0; i < nall; ++i) {
      for (int c = 0; c < 9; ++c) cvatom[i][c] += s * out.atom_virial[9 * i + kCentroid[c]];
    }
  }
}

void PairDeepMD::WriteDeviation() {
  const int nlocal = atom->nlocal;
  const size_t nmodels = models_->size();
  // Ghost forces folded onto their owners, for every model (LAMMPS's own reverse pattern).
  folded_forces_.resize(nmodels);
  for (size_t k = 0; k < nmodels; ++k) folded_forces_[k] = outputs_[k].force;
  comm_mode_ = CommMode::kFoldModelForces;
  deepmd::lammps::ReverseComm(comm, this);
  comm_mode_ = CommMode::kNone;

  // Per-atom deviation of this rank's atoms of the model (NULL atoms are left out of the statistics).
  std::vector<int> rows;
  for (int i = 0; i < nlocal; ++i) {
    if (atype_[i] >= 0) rows.push_back(i);
  }
  std::vector<std::vector<double>> forces(nmodels, std::vector<double>(3 * rows.size()));
  for (size_t k = 0; k < nmodels; ++k) {
    for (size_t r = 0; r < rows.size(); ++r) {
      for (int d = 0; d < 3; ++d) forces[k][3 * r + d] = folded_forces_[k][3 * rows[r] + d];
    }
  }
  const std::vector<double> devi =
      deepmd::runtime::AtomForceDeviation(forces, static_cast<int>(rows.size()), options_.relative);
  double local_max = 0, local_min = std::numeric_limits<double>::infinity(), local_sum = 0;
  for (double d : devi) local_max = std::max(local_max, d), local_min = std::min(local_min, d), local_sum += d;
  double sums[2] = {local_sum, static_cast<double>(rows.size())}, totals[2];
  deepmd::runtime::DeviationStats stats;
  MPI_Allreduce(&local_max, &stats.max_devi_f, 1, MPI_DOUBLE, MPI_MAX, world);
  MPI_Allreduce(&local_min, &stats.min_devi_f, 1, MPI_DOUBLE, MPI_MIN, world);
  MPI_Allreduce(sums, totals, 2, MPI_DOUBLE, MPI_SUM, world);
  const int natoms = static_cast<int>(totals[1]);
  if (natoms == 0) stats.min_devi_f = 0;
  stats.avg_devi_f = natoms > 0 ? totals[0] / natoms : 0;

  std::vector<std::array<double, 9>> virials(nmodels);
  std::vector<double> energies(nmodels);
  for (size_t k = 0; k < nmodels; ++k) {
    MPI_Allreduce(outputs_[k].virial.data(), virials[k].data(), 9, MPI_DOUBLE, MPI_SUM, world);
    MPI_Allreduce(&outputs_[k].energy, &energies[k], 1, MPI_DOUBLE, MPI_SUM, world);
  }
  const std::array<double, 9> devi_v = deepmd::runtime::VirialDeviation(virials, natoms, options_.relative_v);
  stats.max_devi_v = *std::max_element(devi_v.begin(), devi_v.end());
  stats.min_devi_v = *std::min_element(devi_v.begin(), devi_v.end());
  for (double d : devi_v) stats.avg_devi_v += d / 9;
  stats.devi_e = deepmd::runtime::EnergyDeviation(energies, natoms);

  if (options_.atomic) {
    // Every atom's deviation (0 for NULL atoms), gathered on rank 0 in atom id order.
    std::vector<double> mine(2 * nlocal, 0.0);
    for (int i = 0; i < nlocal; ++i) mine[2 * i] = atom->tag[i];
    for (size_t r = 0; r < rows.size(); ++r) mine[2 * rows[r] + 1] = devi[r];
    const int count = 2 * nlocal;
    std::vector<int> counts(comm->nprocs), offsets(comm->nprocs);
    MPI_Gather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, world);
    std::vector<double> all;
    if (comm->me == 0) {
      int total = 0;
      for (int p = 0; p < comm->nprocs; ++p) offsets[p] = total, total += counts[p];
      all.resize(total);
    }
    MPI_Gatherv(mine.data(), count, MPI_DOUBLE, all.data(), counts.data(), offsets.data(), MPI_DOUBLE, 0, world);
    if (comm->me == 0) {
      std::vector<std::pair<double, double>> by_tag(all.size() / 2);
      for (size_t a = 0; a < by_tag.size(); ++a) by_tag[a] = {all[2 * a], all[2 * a + 1]};
      std::sort(by_tag.begin(), by_tag.end());
      stats.atom_devi_f.resize(by_tag.size());
      for (size_t a = 0; a < by_tag.size(); ++a) stats.atom_devi_f[a] = by_tag[a].second;
    }
  }
  if (comm->me == 0 && deviation_file_) {
    fputs(deepmd::lammps::DeviationFileLine(update->ntimestep, stats, options_.atomic).c_str(), deviation_file_);
    fflush(deviation_file_);
  }
}

void PairDeepMD::StopIfAnyRankFailed(const absl::Status& status, bool agreed) {
  // Statuses the runtime returns are already agreed: if this rank is fine, so is every rank.
  if (agreed && status.ok()) return;
  // This rank left a with-comm graph midway: its peers may wait in an exchange it will never reach, so
  // no collective can follow.
  if (deepmd::runtime::PeersMayBeInExchange(status)) Abort(status);
  const absl::Status all = agreed ? status : deepmd::runtime::AgreeAcrossRanks(status, world);
  if (all.ok()) return;
  error->all(FLERR, absl::StrFormat("pair_style %s: %s", force->pair_style, all.message()));
}

void PairDeepMD::Abort(const absl::Status& status) {
  const std::string message =
      absl::StrFormat("pair_style %s on rank %d: %s", force->pair_style, comm->me, status.message());
  // error->one writes only to this rank's screen and log, which LAMMPS gives rank 0 alone.
  if (screen == nullptr) std::fprintf(stderr, "ERROR on proc %d: %s\n", comm->me, message.c_str());
  error->one(FLERR, message);
  std::abort();  // error->one does not return (it throws or calls MPI_Abort)
}

int PairDeepMD::pack_forward_comm(int n, int* list, double* buf, int /*pbc_flag*/, int* /*pbc*/) {
  switch (comm_mode_) {
    case CommMode::kDiscoverSwaps:
      return swaps_.PackForward(n, list, comm->me, buf);
    case CommMode::kSpins:
      return SpinPackForward(n, list, buf);
    default:
      return 0;
  }
}

void PairDeepMD::unpack_forward_comm(int n, int first, double* buf) {
  switch (comm_mode_) {
    case CommMode::kDiscoverSwaps:
      swaps_.UnpackForward(n, first, buf);
      break;
    case CommMode::kSpins:
      SpinUnpackForward(n, first, buf);
      break;
    default:
      break;
  }
}

int PairDeepMD::pack_reverse_comm(int n, int first, double* buf) {
  switch (comm_mode_) {
    case CommMode::kDiscoverSwaps:
      return swaps_.PackReverse(n, first, comm->me, buf);
    case CommMode::kFoldModelForces: {
      int m = 0;
      for (int i = first; i < first + n; ++i) {
        for (const auto& f : folded_forces_) {
          for (int d = 0; d < 3; ++d) buf[m++] = f[3 * i + d];
        }
      }
      return m;
    }
    case CommMode::kFoldMagneticForces:
      return SpinPackReverse(n, first, buf);
    default:
      return 0;
  }
}

void PairDeepMD::unpack_reverse_comm(int n, int* list, double* buf) {
  switch (comm_mode_) {
    case CommMode::kDiscoverSwaps:
      swaps_.UnpackReverse(n, buf);
      break;
    case CommMode::kFoldModelForces: {
      int m = 0;
      for (int j = 0; j < n; ++j) {
        for (auto& f : folded_forces_) {
          for (int d = 0; d < 3; ++d) f[3 * list[j] + d] += buf[m++];
        }
      }
      break;
    }
    case CommMode::kFoldMagneticForces:
      SpinUnpackReverse(n, list, buf);
      break;
    default:
      break;
  }
}

}  // namespace LAMMPS_NS
