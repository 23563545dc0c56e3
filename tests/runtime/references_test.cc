// The C++ runtime's standalone entry (EvaluatePeriodic) on deepmd-kit's reference outputs: every model of
// the registry (tests/registry), every case of its references file, energy, forces, virial, atom energies,
// atom virials and magnetic forces.
//
//   references_test REGISTRY.json ARCHIVE_DIR REFERENCES_DIR
//
// Tolerances: float64 models 1e-10 absolute; float32 models 1e-6 relative to the largest |value| of a key.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "deepmd/runtime/deep_pot.h"
#include "deepmd/runtime/standalone.h"

namespace {

using nlohmann::json;

std::vector<double> Values(const json& j) {
  std::vector<double> v;
  if (j.is_number()) v.push_back(j.get<double>());
  if (j.is_array()) {
    for (const auto& x : j) v.push_back(x.get<double>());
  }
  return v;
}

// Largest deviation of `got` from `want` over a key, in the tolerance's units (absolute or relative).
double Deviation(const std::vector<double>& got, const std::vector<double>& want, bool relative) {
  if (got.size() != want.size()) return INFINITY;
  double worst = 0, scale = 1;
  if (relative) {
    scale = 0;
    for (double w : want) scale = std::max(scale, std::abs(w));
    scale = std::max(scale, 1e-300);
  }
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::abs(got[i] - want[i]);
    worst = std::max(worst, std::isfinite(d) ? d / scale : INFINITY);
  }
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s REGISTRY.json ARCHIVE_DIR REFERENCES_DIR\n", argv[0]);
    return 2;
  }
  json registry = json::parse(std::ifstream(argv[1]));
  int passed = 0, failed = 0;
  for (const auto& [name, entry] : registry.items()) {
    const std::string archive = absl::StrCat(argv[2], "/", name, ".pt2");
    const std::string source = entry["source"].get<std::string>();
    const std::string stem = source.substr(0, source.rfind('.'));
    std::ifstream ref_file(absl::StrCat(argv[3], "/", stem, ".json"));
    if (!ref_file) {
      std::printf("FAIL %s: no references/%s.json\n", name.c_str(), stem.c_str());
      ++failed;
      continue;
    }
    const json ref = json::parse(ref_file);
    auto pot = deepmd::runtime::DeepPot::Load(archive);
    if (!pot.ok()) {
      std::printf("FAIL %s: %s\n", name.c_str(), std::string(pot.status().message()).c_str());
      ++failed;
      continue;
    }
    const bool relative = entry["precision"] == "float32";
    const double tolerance = relative ? 1e-6 : 1e-10;
    for (const auto& [case_name, c] : ref["cases"].items()) {
      const std::vector<double> coord = Values(c["coord"]);
      std::vector<int> atype;
      for (const auto& t : c["atype"]) atype.push_back(t.get<int>());
      std::vector<double> spin, fparam, aparam;
      if (c.contains("spin")) spin = Values(c["spin"]);
      if (c.contains("fparam")) fparam = Values(c["fparam"]);
      if (c.contains("aparam")) aparam = Values(c["aparam"]);
      deepmd::runtime::PeriodicInput in;
      in.coord = coord;
      in.atype = atype;
      in.spin = spin;
      in.fparam = fparam;
      in.aparam = aparam;
      in.atomic = true;
      if (c["box"].is_null()) {
        in.cell = {1, 0, 0, 0, 1, 0, 0, 0, 1};
        in.periodic = {false, false, false};
      } else {
        const std::vector<double> box = Values(c["box"]);
        std::copy(box.begin(), box.end(), in.cell.begin());
      }
      deepmd::runtime::ComputeOutput out;
      const absl::Status status = deepmd::runtime::EvaluatePeriodic(**pot, in, out);
      std::string verdict;
      double worst = 0;
      if (!status.ok()) {
        verdict = std::string(status.message());
        worst = INFINITY;
      } else {
        const std::vector<std::pair<std::string, std::vector<double>>> got = {
            {"energy", {out.energy}},
            {"force", out.force},
            {"virial", std::vector<double>(out.virial.begin(), out.virial.end())},
            {"atom_energy", out.atom_energy},
            {"atom_virial", out.atom_virial},
            {"force_mag", out.force_mag}};
        for (const auto& [key, values] : got) {
          if (!c.contains(key) || c[key].is_null()) continue;
          const double d = Deviation(values, Values(c[key]), relative);
          if (d > worst) {
            worst = d;
            verdict = key;
          }
        }
      }
      const bool ok = worst <= tolerance;
      std::printf("%s %s / %s: worst %.3e (%s)\n", ok ? "ok  " : "FAIL", name.c_str(), case_name.c_str(), worst,
                  verdict.c_str());
      ok ? ++passed : ++failed;
    }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
