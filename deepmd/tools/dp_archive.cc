// dp_archive: inspect, verify and extract model archives (.pt2, docs/model_archive.md) without Python.
//
//   dp_archive inspect FILE [--json]   a readable summary (or JSON) of the metadata and entries
//   dp_archive verify FILE             loads every graph, checks them against the metadata, evaluates a
//                                      generated periodic system: finite results, and the with-comm graph
//                                      on a multi-hop self-exchange plan equal to the regular graph
//   dp_archive extract FILE DIR [--force]
//                                      writes every entry under DIR (never outside it: entries named
//                                      with '..' or absolutely are refused); existing files only with --force
//
// Exit status: 0 good, 1 the archive fails or a file cannot be written (the message says why), 2 usage
// error.
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
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
#include "deepmd/runtime/neighbor_list.h"
#include "deepmd/runtime/periodic_images.h"

ABSL_FLAG(bool, json, false, "inspect: print JSON instead of a table");
ABSL_FLAG(int, atoms, 12, "verify: atoms in the generated periodic system");
ABSL_FLAG(int, seed, 1, "verify: seed of the generated system");
ABSL_FLAG(bool, force, false, "extract: overwrite files that exist already");

namespace {

using deepmd::runtime::Archive;
using deepmd::runtime::ArchiveMetadata;
using deepmd::runtime::Graph;

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
    std::printf("%s\n", nlohmann::json{{"file", archive.name()}, {"bytes", archive.size_bytes()},
                                       {"entries", list}, {"metadata", j}}
                            .dump(2)
                            .c_str());
    return 0;
  }
  std::printf("archive        %s (%zu bytes)\n", archive.name().c_str(), archive.size_bytes());
  const nlohmann::json meta = nlohmann::json::parse(*archive.Read("metadata.json"), nullptr, false);
  if (meta.is_object() && meta.contains("source") && meta["source"].is_object()) {
    const nlohmann::json& src = meta["source"];
    auto text = [&](const char* key) { return src.contains(key) && src[key].is_string() ? src[key].get<std::string>() : ""; };
    std::printf("source         %s%s%s\n", text("file").c_str(),
                text("sha256").empty() ? "" : absl::StrCat(" (sha256 ", text("sha256").substr(0, 16), "...)").c_str(),
                text("deepmd_kit_version").empty() ? "" : absl::StrCat(", ", text("software"), " ",
                                                                        text("deepmd_kit_version")).c_str());
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
  std::printf("exchanges      %s\n",
              m.exchanged_feature_widths.empty() ? "none"
                                                 : absl::StrCat(m.exchanged_feature_widths.size(), " per evaluation, widths ",
                                                                absl::StrJoin(m.exchanged_feature_widths, ","))
                                                       .c_str());
  std::printf("parameters     fparam %d, aparam %d\n", m.dim_fparam, m.dim_aparam);
  if (m.is_spin) {
    std::vector<std::string> spins;
    for (size_t t = 0; t < m.type_map.size(); ++t) {
      spins.push_back(absl::StrCat(m.type_map[t], m.use_spin[t] ? absl::StrCat(" (scale ", m.virtual_scale[t], ")")
                                                                : " (no spin)"));
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

// Evaluates one graph on the generated system; returns its outputs.
absl::StatusOr<c10::Dict<c10::IValue, c10::IValue>> Evaluate(torch::jit::Module& module, Graph graph,
                                                               const ArchiveMetadata& m,
                                                               const deepmd::runtime::PeriodicImages& images,
                                                               const std::vector<int64_t>& types,
                                                               const std::vector<double>& spins) {
  const int64_t nall = static_cast<int64_t>(images.owner.size()), nloc = images.nloc;
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  torch::Tensor coord = torch::from_blob(const_cast<double*>(images.coord.data()), {1, nall, 3}, f64).clone();
  torch::Tensor owner = torch::from_blob(const_cast<int64_t*>(images.owner.data()), {1, nall}, i64).clone();
  torch::Tensor atype = torch::tensor(types, i64).index({owner});
  deepmd::runtime::NeighborList list;
  deepmd::runtime::BuildNeighborList(images.coord, nloc, m.rcut, list);
  torch::Tensor nlist = torch::empty({1, nloc, std::max<int64_t>(list.max_row(), 1)}, i64);
  list.ToPadded(nlist.size(2), nlist.data_ptr<int64_t>());
  std::vector<c10::IValue> inputs = {coord, atype};
  if (m.is_spin) inputs.push_back(torch::tensor(spins, f64).reshape({-1, 3}).index({owner}));
  inputs.push_back(nlist);
  if (graph == Graph::kRegular) inputs.push_back(owner);
  inputs.push_back(m.dim_fparam ? c10::IValue(torch::ones({1, m.dim_fparam}, f64)) : c10::IValue());
  inputs.push_back(m.dim_aparam ? c10::IValue(torch::ones({1, nloc, m.dim_aparam}, f64)) : c10::IValue());
  inputs.push_back(true);
  if (graph == Graph::kWithComm) {
    inputs.push_back(torch::tensor(images.plan, torch::TensorOptions().dtype(torch::kInt32)));
  }
  try {
    return module.get_method(deepmd::runtime::GraphMethod(graph))(inputs).toGenericDict();
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(deepmd::runtime::GraphMethod(graph), " failed on a generated system: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {  // TorchScript's own exceptions
    return absl::InvalidArgumentError(
        absl::StrCat(deepmd::runtime::GraphMethod(graph), " failed on a generated system: ", e.what()));
  }
}

int Verify(const Archive& archive) {
  const ArchiveMetadata& m = archive.metadata();
  absl::StatusOr<torch::jit::Module> regular = archive.LoadGraph(Graph::kRegular);
  if (!regular.ok()) return Fail(regular.status());
  std::printf("loaded regular graph (forward_lower)\n");
  absl::StatusOr<torch::jit::Module> with_comm;
  if (m.has_comm_artifact) {
    with_comm = archive.LoadGraph(Graph::kWithComm);
    if (!with_comm.ok()) return Fail(with_comm.status());
    std::printf("loaded with-comm graph (forward_lower_with_comm)\n");
  }
  // A periodic box thinner than the cutoff: images of images, several hops deep.
  const int natoms = absl::GetFlag(FLAGS_atoms);
  const std::array<double, 3> box = {0.8 * m.rcut, 0.9 * m.rcut, 1.1 * m.rcut};
  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
  std::uniform_real_distribution<double> unit(0, 1);
  std::vector<double> coord;
  std::vector<int64_t> types;
  std::vector<double> spins;
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
    types.push_back(static_cast<int64_t>(types.size() % m.type_map.size()));
    for (int d = 0; d < 3; ++d) spins.push_back(unit(rng) - 0.5);
  }
  absl::StatusOr<deepmd::runtime::PeriodicImages> images =
      deepmd::runtime::MakePeriodicImages(coord, box, {true, true, true}, m.rcut);
  if (!images.ok()) return Fail(images.status());
  auto ref = Evaluate(*regular, Graph::kRegular, m, *images, types, spins);
  if (!ref.ok()) return Fail(ref.status());
  for (const char* key : {"energy", "force", "virial"}) {
    if (!ref->contains(key) || !ref->at(key).toTensor().isfinite().all().item<bool>()) {
      return Fail(absl::InvalidArgumentError(absl::StrCat("the regular graph's '", key, "' is missing or not finite")));
    }
  }
  std::printf("regular graph: %zu atoms, %zu with images, energy %.10g eV\n", types.size(), images->owner.size(),
              ref->at("energy").toTensor().item<double>());
  if (m.has_comm_artifact) {
    auto out = Evaluate(*with_comm, Graph::kWithComm, m, *images, types, spins);
    if (!out.ok()) return Fail(out.status());
    const double tolerance = m.precision == "float64" ? 1e-10 : 1e-5;
    double worst = 0;
    for (const char* key : {"energy", "force", "virial", "atom_virial", "force_mag"}) {
      if (!ref->contains(key)) continue;
      const torch::Tensor a = ref->at(key).toTensor(), b = out->at(key).toTensor();
      worst = std::max(worst, (a - b).abs().max().item<double>() / std::max(1.0, a.abs().max().item<double>()));
    }
    std::printf("with-comm graph on a multi-hop self-exchange plan: largest relative difference %.3e (tolerance %.0e)\n",
                worst, tolerance);
    if (!(worst <= tolerance)) {
      return Fail(absl::InvalidArgumentError("the with-comm graph disagrees with the regular graph"));
    }
  }
  std::printf("verdict: OK\n");
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
