#include "deepmd/tools/npy_system.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "deepmd/tools/npy.h"

namespace deepmd::tools {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<std::vector<std::string>> ReadWords(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

// Frames of an optional per-frame array with `width` values each; empty when the file is absent.
absl::StatusOr<std::vector<std::vector<double>>> PerFrame(const fs::path& path, int64_t nframes, int64_t width,
                                                          bool required) {
  std::vector<std::vector<double>> rows;
  if (!fs::exists(path)) {
    if (required) return absl::NotFoundError(absl::StrCat(path.string(), " is missing"));
    return rows;
  }
  absl::StatusOr<NpyArray> a = ReadNpy(path.string());
  if (!a.ok()) return a.status();
  if (nframes >= 0 && static_cast<int64_t>(a->values.size()) != nframes * width) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), " has ", a->values.size(), " values; expected ", nframes, " frames x ", width));
  }
  for (int64_t f = 0; f < nframes; ++f) {
    rows.emplace_back(a->values.begin() + f * width, a->values.begin() + (f + 1) * width);
  }
  return rows;
}

}  // namespace

absl::StatusOr<LabelledSystem> ReadLabelledSystem(const std::string& directory) {
  const fs::path dir(directory);
  if (!fs::is_directory(dir)) return absl::NotFoundError(absl::StrCat(directory, " is not a folder"));
  LabelledSystem sys;
  absl::StatusOr<std::vector<std::string>> types = ReadWords(dir / "type.raw");
  if (!types.ok()) return types.status();
  for (const std::string& w : *types) {
    int t = 0;
    if (!absl::SimpleAtoi(w, &t) || t < 0) {
      return absl::InvalidArgumentError(absl::StrCat((dir / "type.raw").string(), ": '", w, "' is not a type index"));
    }
    sys.type.push_back(t);
  }
  if (sys.type.empty()) return absl::InvalidArgumentError(absl::StrCat((dir / "type.raw").string(), " lists no atom"));
  if (fs::exists(dir / "type_map.raw")) {
    absl::StatusOr<std::vector<std::string>> names = ReadWords(dir / "type_map.raw");
    if (!names.ok()) return names.status();
    sys.type_map = *names;
  }
  const int64_t natoms = static_cast<int64_t>(sys.type.size());
  const bool nopbc = fs::exists(dir / "nopbc");
  std::vector<fs::path> sets;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_directory() && e.path().filename().string().rfind("set.", 0) == 0) sets.push_back(e.path());
  }
  std::sort(sets.begin(), sets.end());
  if (sets.empty()) return absl::NotFoundError(absl::StrCat(directory, " has no set.* folder"));
  for (const fs::path& set : sets) {
    absl::StatusOr<NpyArray> coord = ReadNpy((set / "coord.npy").string());
    if (!coord.ok()) return coord.status();
    if (coord->values.size() % (3 * natoms) != 0) {
      return absl::InvalidArgumentError(absl::StrCat((set / "coord.npy").string(), " has ", coord->values.size(),
                                                     " values, not a multiple of 3 x ", natoms, " atoms"));
    }
    const int64_t nframes = static_cast<int64_t>(coord->values.size()) / (3 * natoms);
    auto box = PerFrame(set / "box.npy", nframes, 9, !nopbc);
    auto energy = PerFrame(set / "energy.npy", nframes, 1, false);
    auto force = PerFrame(set / "force.npy", nframes, 3 * natoms, false);
    for (const auto* s : {&box, &energy, &force}) {
      if (!s->ok()) return s->status();
    }
    std::vector<std::vector<double>> fparam, aparam;
    if (fs::exists(set / "fparam.npy")) {
      absl::StatusOr<NpyArray> a = ReadNpy((set / "fparam.npy").string());
      if (!a.ok()) return a.status();
      const int64_t width = static_cast<int64_t>(a->values.size()) / std::max<int64_t>(nframes, 1);
      auto rows = PerFrame(set / "fparam.npy", nframes, width, true);
      if (!rows.ok()) return rows.status();
      fparam = *rows;
    }
    if (fs::exists(set / "aparam.npy")) {
      absl::StatusOr<NpyArray> a = ReadNpy((set / "aparam.npy").string());
      if (!a.ok()) return a.status();
      const int64_t width = static_cast<int64_t>(a->values.size()) / std::max<int64_t>(nframes, 1);
      auto rows = PerFrame(set / "aparam.npy", nframes, width, true);
      if (!rows.ok()) return rows.status();
      aparam = *rows;
    }
    for (int64_t f = 0; f < nframes; ++f) {
      LabelledFrame frame;
      frame.set = set.filename().string();
      frame.index = static_cast<int>(f);
      frame.coord.assign(coord->values.begin() + f * 3 * natoms, coord->values.begin() + (f + 1) * 3 * natoms);
      if (!nopbc && !box->empty()) frame.box = (*box)[f];
      if (!energy->empty()) {
        frame.has_energy = true;
        frame.energy = (*energy)[f][0];
      }
      if (!force->empty()) {
        frame.has_force = true;
        frame.force = (*force)[f];
      }
      if (!fparam.empty()) frame.fparam = fparam[f];
      if (!aparam.empty()) frame.aparam = aparam[f];
      sys.frames.push_back(std::move(frame));
    }
  }
  return sys;
}

}  // namespace deepmd::tools
