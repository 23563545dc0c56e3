// dp_archive: inspect, verify and extract model archives (.pt2, docs/model_archive.md) without Python.
//
//   dp_archive inspect FILE [--json]   a readable summary (or JSON) of the metadata and entries
//   dp_archive verify FILE             checks every entry's CRC-32 and the content hash, then loads the
//                                      archive through the runtime (DeepPot), evaluates a generated periodic
//                                      system with its standalone entry: finite results, and the with-comm
//                                      graph on a multi-hop self-exchange plan equal to the regular graph
//   dp_archive extract FILE DIR [--force]
//                                      writes every entry under DIR (never outside it: entries named
//                                      with '..' or absolutely are refused); existing files only with --force
//
// Exit status: 0 good, 1 the archive fails or a file cannot be written (the message says why), 2 usage
// error.
#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "deepmd/runtime/archive.h"
#include "deepmd/runtime/deep_pot.h"
#include "deepmd/runtime/standalone.h"

ABSL_FLAG(bool, json, false, "inspect: print JSON instead of a table");
ABSL_FLAG(int, atoms, 12, "verify: atoms in the generated periodic system");
ABSL_FLAG(int, seed, 1, "verify: seed of the generated system");
ABSL_FLAG(bool, force, false, "extract: overwrite files that exist already");

namespace {

using deepmd::runtime::Archive;
using deepmd::runtime::ArchiveMetadata;

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "dp_archive: %s\n", std::string(status.message()).c_str());
  return 1;
}

int Inspect(const Archive& archive) {
  const ArchiveMetadata& m = archive.metadata();
  const auto entries = archive.Entries();
  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::json j = nlohmann::json::parse(*archive.Read("metadata.json"));
    nlohmann::json list = nlohmann::json::array();
    for (const auto& [name, size] : entries) list.push_back({{"name", name}, {"bytes", size}});
    std::printf(
        "%s\n",
        nlohmann::json{{"file", archive.name()}, {"bytes", archive.size_bytes()}, {"entries", list}, {"metadata", j}}
            .dump(2)
            .c_str());
    return 0;
  }
  std::printf("archive        %s (%zu bytes)\n", archive.name().c_str(), archive.size_bytes());
  const nlohmann::json meta = nlohmann::json::parse(*archive.Read("metadata.json"), nullptr, false);
  if (meta.is_object() && meta.contains("source") && meta["source"].is_object()) {
    const nlohmann::json& src = meta["source"];
    auto text = [&](const char* key) {
      return src.contains(key) && src[key].is_string() ? src[key].get<std::string>() : "";
    };
    std::printf("source         %s%s%s\n", text("file").c_str(),
                text("sha256").empty() ? "" : absl::StrCat(" (sha256 ", text("sha256").substr(0, 16), "...)").c_str(),
                text("deepmd_kit_version").empty()
                    ? ""
                    : absl::StrCat(", ", text("software"), " ", text("deepmd_kit_version")).c_str());
  }
  if (meta.is_object() && meta.contains("descriptor") && meta["descriptor"].is_object()) {
    const nlohmann::json& d = meta["descriptor"];
    std::string children;
    if (d.contains("children") && d["children"].is_array()) {
      std::vector<std::string> names;
      for (const auto& c : d["children"]) names.push_back(c.value("type", "?"));
      children = absl::StrCat(" of ", absl::StrJoin(names, " + "));
    }
    std::string fitting;
    if (meta.contains("model_config") && meta["model_config"].is_object() &&
        meta["model_config"].contains("fitting_net") && meta["model_config"]["fitting_net"].contains("neuron")) {
      fitting = absl::StrCat("; fitting net ", meta["model_config"]["fitting_net"]["neuron"].dump());
    }
    std::printf("model          %s descriptor%s, %d per atom%s\n", d.value("type", "?").c_str(), children.c_str(),
                d.value("dim_out", 0), fitting.c_str());
    if (meta.contains("model_config") && meta["model_config"].is_object() &&
        meta["model_config"].contains("descriptor")) {
      std::printf("descriptor     %s\n", meta["model_config"]["descriptor"].dump().c_str());
    }
  }
  std::printf("format         version %d, %s graphs, %s\n", m.format_version, m.artifact_kind.c_str(),
              m.precision.c_str());
  std::printf("type map       %s\n", absl::StrJoin(m.type_map, " ").c_str());
  std::printf("cutoff         %g A, sel %s (nnei %d)\n", m.rcut, absl::StrJoin(m.sel, ",").c_str(), m.nnei);
  std::printf("layers         %d message-passing layer(s); across ranks: %s\n", m.nlayers,
              m.has_message_passing_across_ranks ? "yes" : "no");
  std::printf("exchanges      %s\n", m.exchanged_feature_widths.empty()
                                         ? "none"
                                         : absl::StrCat(m.exchanged_feature_widths.size(), " per evaluation, widths ",
                                                        absl::StrJoin(m.exchanged_feature_widths, ","))
                                               .c_str());
  std::printf("parameters     fparam %d, aparam %d\n", m.dim_fparam, m.dim_aparam);
  if (m.is_spin) {
    std::vector<std::string> spins;
    for (size_t t = 0; t < m.type_map.size(); ++t) {
      spins.push_back(absl::StrCat(m.type_map[t],
                                   m.use_spin[t] ? absl::StrCat(" (scale ", m.virtual_scale[t], ")") : " (no spin)"));
    }
    std::printf("spin           %s\n", absl::StrJoin(spins, ", ").c_str());
  }
  std::printf("graphs         regular%s\n",
              m.has_comm_artifact ? ", with-comm (multi-rank)" : " only (runs on one rank)");
  for (const auto& [name, size] : entries) std::printf("  %-44s %10zu bytes\n", name.c_str(), size);
  return 0;
}

// Where entry `name` goes under `dir`, or an error when it would land outside (absolute, '..', empty).
absl::StatusOr<std::filesystem::path> EntryPath(const std::filesystem::path& dir, const std::string& name) {
  const std::filesystem::path relative(name);
  bool escapes = name.empty() || relative.has_root_path() || relative.has_root_name();
  for (const auto& part : relative) escapes = escapes || part == "..";
  if (escapes) {
    return absl::InvalidArgumentError(absl::StrCat("entry '", name, "' would be written outside '", dir.string(),
                                                   "' (an absolute name or '..'): refusing to extract this archive"));
  }
  return dir / relative.lexically_normal();
}

int Extract(const Archive& archive, const std::string& dir) {
  const auto entries = archive.Entries();
  std::vector<std::filesystem::path> paths;
  for (const auto& [name, size] : entries) {  // every name checked before anything is written
    absl::StatusOr<std::filesystem::path> path = EntryPath(dir, name);
    if (!path.ok()) return Fail(path.status());
    std::error_code exists_error;
    if (!absl::GetFlag(FLAGS_force) && std::filesystem::exists(*path, exists_error)) {
      return Fail(absl::AlreadyExistsError(
          absl::StrCat("'", path->string(), "' exists already: extract into an empty folder, or pass --force")));
    }
    paths.push_back(*std::move(path));
  }
  for (size_t e = 0; e < entries.size(); ++e) {
    const std::filesystem::path& path = paths[e];
    std::error_code error;
    std::filesystem::create_directories(path.parent_path(), error);
    if (error) {
      return Fail(absl::PermissionDeniedError(
          absl::StrCat("cannot create the folder '", path.parent_path().string(), "': ", error.message())));
    }
    absl::StatusOr<std::string> bytes = archive.Read(entries[e].first);
    if (!bytes.ok()) return Fail(bytes.status());
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes->data(), static_cast<std::streamsize>(bytes->size()));
    out.close();
    if (!out) {
      return Fail(absl::DataLossError(absl::StrCat("cannot write '", path.string(), "': ", std::strerror(errno),
                                                   " (is the folder writable, the disk full?)")));
    }
    std::printf("%s\n", path.c_str());
  }
  return 0;
}

// One evaluation of the generated system through the runtime's standalone entry (the call convention
// of the graphs is the runtime's own: nothing here reimplements it).
absl::StatusOr<deepmd::runtime::ComputeOutput> Evaluate(deepmd::runtime::DeepPot& pot,
                                                        deepmd::runtime::PeriodicInput input) {
  const ArchiveMetadata& m = pot.metadata();
  const std::vector<double> fparam(m.dim_fparam, 1.0), aparam(m.dim_aparam * input.atype.size(), 1.0);
  input.fparam = fparam;
  input.aparam = aparam;
  input.atomic = true;
  deepmd::runtime::ComputeOutput out;
  if (absl::Status s = deepmd::runtime::EvaluatePeriodic(pot, input, out); !s.ok()) return s;
  return out;
}

// Largest difference of b from a, relative to a's largest magnitude (at least 1).
double RelativeDifference(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double diff = 0, scale = 1;
  for (size_t k = 0; k < a.size(); ++k) {
    diff = std::max(diff, std::abs(a[k] - b[k]));
    scale = std::max(scale, std::abs(a[k]));
  }
  return diff / scale;
}

int Verify(const Archive& archive) {
  const ArchiveMetadata& m = archive.metadata();
  std::printf("integrity: CRC-32 of %zu entries OK; %s\n", archive.Entries().size(),
              archive.has_content_hash() ? absl::StrCat("content hash (sha256) of ", m.content_sha256.size(),
                                                        m.content_sha256.size() == 1 ? " entry OK" : " entries OK")
                                               .c_str()
                                         : "no content hash (exported before content hashes: re-export to add one)");
  absl::StatusOr<std::unique_ptr<deepmd::runtime::DeepPot>> regular = deepmd::runtime::DeepPot::Load(archive.name());
  if (!regular.ok()) return Fail(regular.status());
  std::printf("loaded regular graph (forward_lower), checked against the metadata\n");
  // A periodic box thinner than the cutoff: images of images, several hops deep.
  const int natoms = absl::GetFlag(FLAGS_atoms);
  const std::array<double, 3> box = {0.8 * m.rcut, 0.9 * m.rcut, 1.1 * m.rcut};
  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
  std::uniform_real_distribution<double> unit(0, 1);
  std::vector<double> coord, spins;
  std::vector<int> types;
  for (int tries = 0; static_cast<int>(types.size()) < natoms && tries < 100000; ++tries) {
    std::array<double, 3> p = {unit(rng) * box[0], unit(rng) * box[1], unit(rng) * box[2]};
    bool ok = true;
    for (size_t j = 0; j < types.size() && ok; ++j) {
      double r2 = 0;
      for (int d = 0; d < 3; ++d) {
        double dx = p[d] - coord[3 * j + d];
        dx -= std::round(dx / box[d]) * box[d];
        r2 += dx * dx;
      }
      ok = r2 > 1.0;
    }
    if (!ok) continue;
    coord.insert(coord.end(), p.begin(), p.end());
    types.push_back(static_cast<int>(types.size() % m.type_map.size()));
    for (int d = 0; d < 3; ++d) spins.push_back(unit(rng) - 0.5);
  }
  deepmd::runtime::PeriodicInput input;
  input.coord = coord;
  input.atype = types;
  input.cell = {box[0], 0, 0, 0, box[1], 0, 0, 0, box[2]};
  if (m.is_spin) input.spin = spins;
  absl::StatusOr<deepmd::runtime::ComputeOutput> ref = Evaluate(**regular, input);
  if (!ref.ok()) return Fail(ref.status());  // the runtime refuses non-finite results itself
  std::printf("regular graph: %zu atoms in a %.3g x %.3g x %.3g A cell, energy %.10g eV\n", types.size(), box[0],
              box[1], box[2], ref->energy);
  if (m.has_comm_artifact) {
    deepmd::runtime::DeepPotOptions check;
    check.with_comm_on_one_rank = true;
    absl::StatusOr<std::unique_ptr<deepmd::runtime::DeepPot>> with_comm =
        deepmd::runtime::DeepPot::Load(archive.name(), check);
    if (!with_comm.ok()) return Fail(with_comm.status());
    absl::StatusOr<deepmd::runtime::ComputeOutput> out = Evaluate(**with_comm, input);
    if (!out.ok()) return Fail(out.status());
    if (std::string((*with_comm)->last_graph()) != "with-comm") {
      return Fail(absl::InternalError("the runtime did not run the with-comm graph in its check mode"));
    }
    const std::array<double, 9>& v = ref->virial;
    const double tolerance = m.precision == "float64" ? 1e-10 : 1e-5;
    const double worst = std::max(
        {RelativeDifference({ref->energy}, {out->energy}), RelativeDifference(ref->force, out->force),
         RelativeDifference({v.begin(), v.end()}, {out->virial.begin(), out->virial.end()}),
         RelativeDifference(ref->atom_energy, out->atom_energy), RelativeDifference(ref->atom_virial, out->atom_virial),
         RelativeDifference(ref->force_mag, out->force_mag)});
    std::printf(
        "with-comm graph on a multi-hop self-exchange plan: largest relative difference %.3e (tolerance %.0e)\n", worst,
        tolerance);
    if (!(worst <= tolerance)) {
      return Fail(absl::InvalidArgumentError("the with-comm graph disagrees with the regular graph"));
    }
  }
  std::printf("verdict: OK%s\n", archive.has_content_hash() ? "" : " (no content hash: re-export to add one)");
  return 0;
}

}  // namespace

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage("dp_archive inspect FILE [--json] | verify FILE | extract FILE DIR [--force]");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  const std::string command = args.size() > 1 ? args[1] : "";
  const size_t want = command == "extract" ? 4 : 3;
  if ((command != "inspect" && command != "verify" && command != "extract") || args.size() != want) {
    std::fprintf(stderr, "usage: %s\n", absl::ProgramUsageMessage().data());
    return 2;
  }
  absl::StatusOr<Archive> archive = Archive::Open(args[2]);
  if (!archive.ok()) return Fail(archive.status());
  if (command == "inspect") return Inspect(*archive);
  if (command == "verify") return Verify(*archive);
  return Extract(*archive, args[3]);
}

int main(int argc, char** argv) {
  // No exception ends the tool unexplained: each becomes a message and exit status 1.
  try {
    return Main(argc, argv);
  } catch (const c10::Error& e) {
    return Fail(absl::InternalError(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return Fail(absl::InternalError(e.what()));
  }
}
