// Per-rank timing of the pair style's steps for the benchmarks (tests/bench): set DEEPMD_PROFILE=PREFIX
// and every rank writes PREFIX.rank<R>.json when the pair style is destroyed, covering the last `run`
// (counters restart at every init). Steps with and without a topology rebuild are kept apart. A few
// clock reads per step, so always on.
#ifndef DEEPMD_LAMMPS_STEP_PROFILE_H_
#define DEEPMD_LAMMPS_STEP_PROFILE_H_

#include <chrono>

#include "deepmd/runtime/deep_pot.h"

namespace deepmd::lammps {

class StepProfile {
 public:
  using Clock = std::chrono::steady_clock;

  // Restarts every counter.
  void Reset(int rank);

  // Around one pair compute(): Begin snapshots the runtime's totals (exchanges included), End files the
  // differences under steps with or without a rebuild.
  void Begin(const runtime::DeepPot& model);
  void End(const runtime::DeepPot& model, bool rebuilt, int nlocal, int nghost);
  // One swap discovery (swap_pattern.h) of `rounds` rounds.
  void AddPlanDiscovery(Clock::time_point start, int rounds) {
    plan_discovery_seconds_ += Since(start);
    if (rounds > plan_discovery_max_rounds_) plan_discovery_max_rounds_ = rounds;
  }

  // Writes PREFIX.rank<rank>.json if DEEPMD_PROFILE is set; otherwise does nothing.
  void WriteIfRequested() const;

 private:
  struct Totals {
    long steps = 0;
    double pair = 0, rebuild = 0, neighbor_list = 0, inputs = 0, graph = 0, outputs = 0;
    double exchange_forward = 0, exchange_reverse = 0;
  };
  static double Since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }
  static void WriteTotals(FILE* f, const char* name, const Totals& t);

  Clock::time_point start_;
  runtime::ComputeTimes runtime_before_;
  Totals steady_, rebuild_;
  double plan_discovery_seconds_ = 0;
  int plan_discovery_max_rounds_ = 0;
  int rank_ = 0, nlocal_ = 0, nghost_ = 0;
};

}  // namespace deepmd::lammps

#endif  // DEEPMD_LAMMPS_STEP_PROFILE_H_
