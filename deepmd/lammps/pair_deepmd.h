// pair_style deepmd: a deepmd/runtime model archive as a LAMMPS pair style, on any number of ranks.
//
//   pair_style deepmd MODEL.pt2 [MODEL2.pt2 ...] [keywords of deepmd-kit's pair_style deepmd]
//   pair_coeff * * O H NULL
// (pair_options.h; `fix adapt ... pair deepmd scale * * v_s` scales energy, forces and virial.)
//
// At every neighbour-list rebuild the style learns LAMMPS's ghost swaps through the public pair comm
// hooks (SwapPattern) and hands them to the runtime as an exchange plan; the runtime builds its own
// neighbour list (cutoff rcut + skin) and picks the graph. Forces go onto all owned and ghost atoms;
// LAMMPS's reverse communication takes ghost forces home (newton pair on).
//
// No exception leaves the style: in settings, coeff and init_style any exception becomes, on every
// rank, a LAMMPS error with its message (the ranks agree at the end of each); in compute the runtime
// turns its own into agreed errors, and one that escapes elsewhere (peers may be waiting in a
// communication) aborts the job with its message.
#ifndef DEEPMD_LAMMPS_PAIR_DEEPMD_H_
#define DEEPMD_LAMMPS_PAIR_DEEPMD_H_

#include "third_party/lammps/fmt_compat.h"  // before any LAMMPS header

#include <mpi.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "deepmd/lammps/pair_options.h"
#include "deepmd/lammps/step_profile.h"
#include "deepmd/lammps/swap_pattern.h"
#include "deepmd/runtime/deep_pot.h"
#include "deepmd/runtime/model_deviation.h"
#include "pair.h"

namespace LAMMPS_NS {

class Compute;
class Fix;

class PairDeepMD : public Pair {
 public:
  explicit PairDeepMD(LAMMPS* lmp);
  ~PairDeepMD() override;

  void settings(int narg, char** arg) override;
  void coeff(int narg, char** arg) override;
  void init_style() override;
  double init_one(int i, int j) override;
  void compute(int eflag, int vflag) override;
  // "scale" (2-d, for fix adapt; deepmd-kit's meaning: one factor on energy, forces, virial and
  // magnetic forces, not on the model deviation) and "cut_coul" (0-d: the largest rcut, which
  // kspace styles take as the real-space cutoff, as with deepmd-kit).
  void* extract(const char* name, int& dim) override;
  // Per-atom arrays plus what the runtime holds (archives, graphs' tensors, cached topology) and the
  // style's own buffers.
  double memory_usage() override;

  int pack_forward_comm(int n, int* list, double* buf, int pbc_flag, int* pbc) override;
  void unpack_forward_comm(int n, int first, double* buf) override;
  int pack_reverse_comm(int n, int first, double* buf) override;
  void unpack_reverse_comm(int n, int* list, double* buf) override;

 protected:
  // What the pair comm hooks currently carry.
  enum class CommMode { kNone, kDiscoverSwaps, kSpins, kFoldModelForces, kFoldMagneticForces };

  // Spin styles fill input_.spin before the models run and take force_mag afterwards.
  virtual bool spin_style() const { return false; }
  virtual void GatherSpins(int /*nall*/) {}
  virtual void ScatterMagneticForces(const deepmd::runtime::ComputeOutput& /*output*/) {}
  virtual int SpinPackForward(int /*n*/, const int* /*list*/, double* /*buf*/) { return 0; }
  virtual void SpinUnpackForward(int /*n*/, int /*first*/, const double* /*buf*/) {}
  virtual int SpinPackReverse(int /*n*/, int /*first*/, double* /*buf*/) { return 0; }
  virtual void SpinUnpackReverse(int /*n*/, const int* /*list*/, const double* /*buf*/) {}

  // How far beyond rcut + skin a model looks on this rank's atoms (spin: virtual atoms).
  virtual double GhostMargin(const deepmd::runtime::ArchiveMetadata& /*model*/) { return 0.0; }

  // Every rank calls this with its own status; if any failed, every rank stops with the message of the
  // first rank that failed itself (the runtime's protocol, rank_agreement.h). `agreed`: the statuses
  // are already agreed (the runtime's), so success needs no communication.
  void StopIfAnyRankFailed(const absl::Status& status, bool agreed);
  // Runs one entry point of the style (every rank calls it at the same point): an exception other
  // than LAMMPS's own becomes, on every rank, a LAMMPS error with its message.
  void Collectively(const char* where, const std::function<void()>& body);
  // This rank alone failed where its peers may be waiting for it: abort the job with the message.
  [[noreturn]] void Abort(const absl::Status& status);

  const deepmd::runtime::ArchiveMetadata& metadata() const;
  // fix adapt's factor on every output that drives the dynamics (1 unless adapted).
  double output_scale() const;

  deepmd::lammps::PairStyleOptions options_;
  std::unique_ptr<deepmd::runtime::ModelDeviation> models_;
  std::vector<int> model_type_;  // LAMMPS type -> model type, -1 = NULL
  std::vector<int> atype_;       // per extended atom, set at rebuilds
  std::vector<int64_t> ids_;     // per extended atom: atom->tag, set at rebuilds (errors name atoms by it)
  CommMode comm_mode_ = CommMode::kNone;
  deepmd::runtime::ComputeInput input_;

 private:
  void Settings(int narg, char** arg);
  void Coeff(int narg, char** arg);
  void InitStyle();
  void Compute(int eflag, int vflag);
  void RebuildTopology();
  void CheckGhostCutoff();
  void RunModels(bool deviation_step);
  void LogWhatRuns();  // once, on rank 0, after the first evaluation: file, model, graph in use, threads
  void AccumulateOutputs(const deepmd::runtime::ComputeOutput& out);
  void WriteDeviation();
  void OpenDeviationFile();
  void BindParameterSources();  // at init: the computes and fixes *_from_compute / _from_fix name
  void UpdateParameters();      // every step: fparam / aparam from them

  MPI_Comm plan_comm_ = MPI_COMM_NULL;  // a duplicate of world: the exchanges never meet LAMMPS's messages
  deepmd::lammps::SwapPattern swaps_;
  std::vector<int32_t> plan_;
  std::vector<double> aparam_;
  std::vector<double> fparam_;                    // from a compute or fix, refreshed every step
  LAMMPS_NS::Compute* fparam_compute_ = nullptr;  // qualified: Compute() is also a method here
  Fix* fparam_fix_ = nullptr;
  LAMMPS_NS::Compute* aparam_compute_ = nullptr;
  double** scale_ = nullptr;  // [ntypes + 1][ntypes + 1]: fix adapt's "scale", 1 by default
  int scale_type_ = 0;        // a type the model sees: its scale_ is the factor (all must agree)
  double cut_coul_ = 0;       // extract("cut_coul")
  int cached_nall_ = -1;
  bool load_logged_ = false;
  long topology_generation_ = 0;
  std::vector<long> model_generation_;  // the topology each model last saw
  std::vector<deepmd::runtime::ComputeOutput> outputs_;
  std::vector<std::vector<double>> folded_forces_;  // per model, [nall, 3], for the deviation
  FILE* deviation_file_ = nullptr;
  deepmd::lammps::StepProfile profile_;
};

}  // namespace LAMMPS_NS

#endif  // DEEPMD_LAMMPS_PAIR_DEEPMD_H_
