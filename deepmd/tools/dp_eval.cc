// dp_eval: evaluates model archives on a structure (extended XYZ) without an MD engine.
//
//   dp_eval MODEL.pt2 [MODEL2.pt2 ...] STRUCTURE.xyz [--json]
//   dp_eval MODEL.pt2 --system DIR [--json]
//
// One model: energy (eV), forces (eV/Å) and virial (eV). Several: the first model's results and the
// model deviation (max/min/avg force deviation, virial and energy deviation per atom). With --system, a
// deepmd-kit data system (type.raw, type_map.raw, set.*/{coord,box,energy,force}.npy): per-frame and
// overall energy (per frame and per atom) and force errors against its labels, as `dp test` prints them.
// Exit status 0, or 1 with a message naming the problem (also for any exception), 2 for usage errors.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "deepmd/runtime/model_deviation.h"
#include "deepmd/runtime/standalone.h"
#include "deepmd/tools/accuracy.h"
#include "deepmd/tools/extxyz.h"
#include "deepmd/tools/npy_system.h"

ABSL_FLAG(bool, json, false, "print JSON instead of tables");
ABSL_FLAG(std::string, system, "", "a deepmd-kit data system folder: report errors against its labels");

namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "dp_eval: %s\n", std::string(status.message()).c_str());
  return 1;
}

// dp_eval MODEL --system DIR: the model's errors against the system's labels.
int TestSystem(const std::string& model, const std::string& directory) {
  absl::StatusOr<deepmd::tools::LabelledSystem> system = deepmd::tools::ReadLabelledSystem(directory);
  if (!system.ok()) return Fail(system.status());
  absl::StatusOr<std::unique_ptr<deepmd::runtime::DeepPot>> pot = deepmd::runtime::DeepPot::Load(model);
  if (!pot.ok()) return Fail(pot.status());
  absl::StatusOr<deepmd::tools::Accuracy> acc = deepmd::tools::EvaluateSystem(**pot, *system);
  if (!acc.ok()) return Fail(acc.status());
  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::json j;
    j["system"] = directory;
    j["natoms"] = acc->natoms;
    j["nframes"] = acc->frames.size();
    if (acc->has_energy) {
      j["energy_mae"] = acc->energy_mae;
      j["energy_rmse"] = acc->energy_rmse;
      j["energy_mae_per_atom"] = acc->energy_mae_per_atom;
      j["energy_rmse_per_atom"] = acc->energy_rmse_per_atom;
    }
    if (acc->has_force) {
      j["force_mae"] = acc->force_mae;
      j["force_rmse"] = acc->force_rmse;
    }
    j["frames"] = nlohmann::json::array();
    for (const auto& f : acc->frames) {
      j["frames"].push_back({{"set", f.set},
                             {"index", f.index},
                             {"energy", f.energy},
                             {"energy_label", f.energy_label},
                             {"force_mae", f.force_mae},
                             {"force_rmse", f.force_rmse}});
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("%-8s %5s %18s %18s %14s %12s %12s\n", "set", "frame", "E (eV)", "E label (eV)", "dE/atom (eV)", "F MAE",
              "F RMSE");
  for (const auto& f : acc->frames) {
    std::printf("%-8s %5d %18.6f %18.6f %14.6e %12.6e %12.6e\n", f.set.c_str(), f.index, f.energy, f.energy_label,
                (f.energy - f.energy_label) / acc->natoms, f.force_mae, f.force_rmse);
  }
  std::printf("# number of test data : %zu\n", acc->frames.size());
  if (acc->has_energy) {
    std::printf("Energy MAE         : %e eV\nEnergy RMSE        : %e eV\n", acc->energy_mae, acc->energy_rmse);
    std::printf("Energy MAE/Natoms  : %e eV\nEnergy RMSE/Natoms : %e eV\n", acc->energy_mae_per_atom,
                acc->energy_rmse_per_atom);
  }
  if (acc->has_force) {
    std::printf("Force  MAE         : %e eV/A\nForce  RMSE        : %e eV/A\n", acc->force_mae, acc->force_rmse);
  }
  return 0;
}

}  // namespace

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "dp_eval MODEL.pt2 [MODEL2.pt2 ...] STRUCTURE.xyz [--json]\n       dp_eval MODEL.pt2 --system DIR [--json]");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (!absl::GetFlag(FLAGS_system).empty()) {
    if (args.size() != 2) {
      std::fprintf(stderr, "usage: dp_eval MODEL.pt2 --system DIR [--json] (one model)\n");
      return 2;
    }
    return TestSystem(args[1], absl::GetFlag(FLAGS_system));
  }
  if (args.size() < 3) {
    std::fprintf(stderr, "usage: %s\n", absl::ProgramUsageMessage().data());
    return 2;
  }
  std::vector<std::string> models(args.begin() + 1, args.end() - 1);
  std::ifstream file(args.back());
  if (!file) return Fail(absl::NotFoundError(absl::StrCat("cannot open structure file '", args.back(), "'")));
  absl::StatusOr<deepmd::tools::Frame> frame = deepmd::tools::ReadExtXyz(file);
  if (!frame.ok()) return Fail(frame.status());
  absl::StatusOr<std::unique_ptr<deepmd::runtime::ModelDeviation>> pots = deepmd::runtime::ModelDeviation::Load(models);
  if (!pots.ok()) return Fail(pots.status());
  const auto& meta = (*pots)->model(0).metadata();

  const int natoms = static_cast<int>(frame->species.size());
  std::vector<int> atype(natoms);
  for (int i = 0; i < natoms; ++i) {
    auto it = std::find(meta.type_map.begin(), meta.type_map.end(), frame->species[i]);
    if (it == meta.type_map.end()) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("atom ", i, " is '", frame->species[i], "', which the model ",
                       "does not know (its elements: ", absl::StrJoin(meta.type_map, " "), ")")));
    }
    atype[i] = static_cast<int>(it - meta.type_map.begin());
  }
  if (meta.is_spin && frame->spin.empty()) {
    return Fail(absl::InvalidArgumentError("a spin model needs a spin:R:3 column in the structure file"));
  }
  deepmd::runtime::PeriodicInput in;
  in.coord = frame->coord;
  in.atype = atype;
  in.cell = frame->has_lattice ? frame->lattice : std::array<double, 9>{1, 0, 0, 0, 1, 0, 0, 0, 1};
  in.periodic = frame->pbc;
  in.spin = frame->spin;
  if (meta.dim_fparam > 0 || meta.dim_aparam > 0) {
    return Fail(absl::UnimplementedError("dp_eval does not read fparam/aparam yet; this model needs them"));
  }
  std::vector<deepmd::runtime::ComputeOutput> outs((*pots)->size());
  for (size_t k = 0; k < (*pots)->size(); ++k) {
    if (absl::Status s = deepmd::runtime::EvaluatePeriodic((*pots)->model(k), in, outs[k]); !s.ok()) {
      return Fail(absl::Status(s.code(), absl::StrCat(models[k], ": ", s.message())));
    }
  }
  const auto& out = outs[0];
  std::vector<std::vector<double>> forces;
  std::vector<std::array<double, 9>> virials;
  std::vector<double> energies;
  for (const auto& o : outs) {
    forces.push_back(o.force);
    virials.push_back(o.virial);
    energies.push_back(o.energy);
  }
  const auto devi = deepmd::runtime::ComputeDeviation(forces, virials, energies, natoms);

  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::json j;
    j["energy"] = out.energy;
    j["virial"] = out.virial;
    j["forces"] = nlohmann::json::array();
    for (int i = 0; i < natoms; ++i)
      j["forces"].push_back({out.force[3 * i], out.force[3 * i + 1], out.force[3 * i + 2]});
    if (!out.force_mag.empty()) {
      j["force_mag"] = nlohmann::json::array();
      for (int i = 0; i < natoms; ++i) {
        j["force_mag"].push_back({out.force_mag[3 * i], out.force_mag[3 * i + 1], out.force_mag[3 * i + 2]});
      }
    }
    if (outs.size() > 1) {
      j["model_deviation"] = {{"max_devi_f", devi.max_devi_f}, {"min_devi_f", devi.min_devi_f},
                              {"avg_devi_f", devi.avg_devi_f}, {"max_devi_v", devi.max_devi_v},
                              {"min_devi_v", devi.min_devi_v}, {"avg_devi_v", devi.avg_devi_v},
                              {"devi_e", devi.devi_e}};
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("energy  %.10f eV  (%d atoms, %s)\n", out.energy, natoms, models[0].c_str());
  std::printf("virial  %s eV\n", absl::StrJoin(out.virial, " ", [](std::string* s, double v) {
                                   absl::StrAppend(s, absl::StrFormat("%.6f", v));
                                 }).c_str());
  std::printf("%6s %-4s %14s %14s %14s\n", "atom", "el", "fx (eV/A)", "fy", "fz");
  for (int i = 0; i < natoms; ++i) {
    std::printf("%6d %-4s %14.8f %14.8f %14.8f\n", i, frame->species[i].c_str(), out.force[3 * i], out.force[3 * i + 1],
                out.force[3 * i + 2]);
  }
  if (outs.size() > 1) {
    std::printf(
        "model deviation (%zu models): max_devi_f %.6e min_devi_f %.6e avg_devi_f %.6e max_devi_v %.6e devi_e %.6e\n",
        outs.size(), devi.max_devi_f, devi.min_devi_f, devi.avg_devi_f, devi.max_devi_v, devi.devi_e);
  }
  return 0;
}

int main(int argc, char** argv) {
  // No exception ends the tool unexplained: each becomes a message and exit status 1.
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    return Fail(absl::InternalError(e.what()));
  }
}
