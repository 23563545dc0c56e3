#include "deepmd/lammps/step_profile.h"

#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_format.h"

namespace deepmd::lammps {

void StepProfile::Reset(int rank) {
  *this = StepProfile();
  rank_ = rank;
}

void StepProfile::Begin(const runtime::DeepPot& model) {
  start_ = Clock::now();
  runtime_before_ = model.times();
}

void StepProfile::End(const runtime::DeepPot& model, bool rebuilt, int nlocal, int nghost) {
  const runtime::ComputeTimes& now = model.times();
  Totals& t = rebuilt ? rebuild_ : steady_;
  ++t.steps;
  t.pair += Since(start_);
  t.rebuild += now.rebuild_seconds - runtime_before_.rebuild_seconds;
  t.neighbor_list += now.neighbor_list_seconds - runtime_before_.neighbor_list_seconds;
  t.inputs += now.inputs_seconds - runtime_before_.inputs_seconds;
  t.graph += now.graph_seconds - runtime_before_.graph_seconds;
  t.outputs += now.outputs_seconds - runtime_before_.outputs_seconds;
  t.exchange_forward += now.exchange_forward_seconds - runtime_before_.exchange_forward_seconds;
  t.exchange_reverse += now.exchange_reverse_seconds - runtime_before_.exchange_reverse_seconds;
  nlocal_ = nlocal;
  nghost_ = nghost;
}

void StepProfile::WriteTotals(FILE* f, const char* name, const Totals& t) {
  std::fprintf(f,
               " \"%s\": {\"steps\": %ld, \"pair_seconds\": %.9g, \"rebuild_seconds\": %.9g, "
               "\"neighbor_list_seconds\": %.9g, \"inputs_seconds\": %.9g, \"graph_seconds\": %.9g, "
               "\"outputs_seconds\": %.9g, \"exchange_forward_seconds\": %.9g, \"exchange_reverse_seconds\": %.9g}",
               name, t.steps, t.pair, t.rebuild, t.neighbor_list, t.inputs, t.graph, t.outputs, t.exchange_forward,
               t.exchange_reverse);
}

void StepProfile::WriteIfRequested() const {
  const char* prefix = std::getenv("DEEPMD_PROFILE");
  if (prefix == nullptr || *prefix == '\0') return;
  const std::string path = absl::StrFormat("%s.rank%d.json", prefix, rank_);
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) {
    std::fprintf(stderr, "deepmd: cannot write the profile %s\n", path.c_str());
    return;
  }
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  std::fprintf(f, "{\"rank\": %d, \"nlocal\": %d, \"nghost\": %d, \"peak_rss_bytes\": %lld,\n", rank_, nlocal_, nghost_,
               static_cast<long long>(usage.ru_maxrss) * 1024);
  std::fprintf(f, " \"plan_discovery_seconds\": %.9g, \"plan_discovery_max_rounds\": %d,\n", plan_discovery_seconds_,
               plan_discovery_max_rounds_);
  WriteTotals(f, "steady", steady_);
  std::fprintf(f, ",\n");
  WriteTotals(f, "rebuild", rebuild_);
  std::fprintf(f, "}\n");
  std::fclose(f);
}

}  // namespace deepmd::lammps
