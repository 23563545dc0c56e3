// Seeded, time-bounded fuzzing of what users hand the runtime: model archives (bit flips anywhere and in
// an entry's data, overwritten runs, truncations, appended bytes; and, rebuilt with valid CRC-32s:
// metadata.json value edits and byte flips, entries swapped, duplicated, removed, renamed, reordered,
// a graph replaced by another model's, the content hash dropped) and extended XYZ inputs of dp_eval.
// Every mutation must give the original result or a clean error (an error status with a message): a
// crash ends the test (the mutation is printed before it runs), a hang is aborted by a watchdog naming
// it, and an archive mutation that evaluates to other numbers fails the test.
//
//   archive_fuzz_test ARCHIVE...   (FUZZ_SECONDS, default 40; FUZZ_SEED, default 1)
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "deepmd/runtime/deep_pot.h"
#include "deepmd/runtime/standalone.h"
#include "deepmd/runtime/zip_directory.h"
#include "deepmd/tools/extxyz.h"
#include "tests/support/zip_writer.h"

namespace {

using deepmd::runtime::ComputeOutput;
using Entries = std::vector<std::pair<std::string, std::string>>;
using Json = nlohmann::json;

constexpr double kPerRunSeconds = 60;  // a mutation taking longer is a hang

std::atomic<int64_t> g_started_ms{0};
std::string g_current;  // the mutation running now (read by the watchdog only when it aborts)

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void Watchdog() {
  for (;;) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const int64_t started = g_started_ms.load();
    if (started && NowMs() - started > kPerRunSeconds * 1000) {
      std::fprintf(stderr, "FAIL: hang (> %.0f s) on mutation: %s\n", kPerRunSeconds, g_current.c_str());
      std::_Exit(3);
    }
  }
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

struct Model {
  std::string path, bytes;
  Entries entries;  // as stored, top folder first
  deepmd::runtime::ArchiveMetadata meta;
  ComputeOutput reference;
};

// A small periodic system for a model: 6 atoms, types cycling over its type map.
struct System {
  std::vector<double> coord = {1.0, 1.0, 1.0, 1.9, 1.2, 1.0, 0.8, 1.9, 1.1,
                               4.0, 4.2, 3.9, 4.8, 4.9, 4.1, 3.3, 4.7, 4.5};
  std::vector<double> spin = {0.1, 0.2, 0.3, 0, 0, 0.5, 0.2, 0.1, 0, 0.3, 0.3, 0.1, 0, 0.4, 0, 0.1, 0, 0.2};
  std::array<double, 9> cell = {9.0, 0, 0, 0, 9.5, 0, 0, 0, 10.0};
  std::array<bool, 3> pbc = {true, true, true};
};

// Loads and evaluates an archive (the path dp_eval and pair_style take: DeepPot::Load, then the runtime).
absl::Status Evaluate(const std::string& path, const std::vector<std::string>* species, const System& system,
                      ComputeOutput& out) {
  absl::StatusOr<std::unique_ptr<deepmd::runtime::DeepPot>> pot = deepmd::runtime::DeepPot::Load(path);
  if (!pot.ok()) return pot.status();
  const auto& m = (*pot)->metadata();
  const size_t natoms = system.coord.size() / 3;
  std::vector<int> atype(natoms);
  for (size_t i = 0; i < natoms; ++i) {
    if (species) {
      auto it = std::find(m.type_map.begin(), m.type_map.end(), (*species)[i]);
      if (it == m.type_map.end()) return absl::InvalidArgumentError("unknown element");
      atype[i] = static_cast<int>(it - m.type_map.begin());
    } else {
      atype[i] = static_cast<int>(i % m.type_map.size());
    }
  }
  std::vector<double> fparam(m.dim_fparam, 0.5), aparam(m.dim_aparam * natoms, 0.5);
  deepmd::runtime::PeriodicInput in;
  in.coord = system.coord;
  in.atype = atype;
  in.cell = system.cell;
  in.periodic = system.pbc;
  if (m.is_spin) {
    if (system.spin.size() != system.coord.size()) return absl::InvalidArgumentError("spins needed");
    in.spin = system.spin;
  }
  in.fparam = fparam;
  in.aparam = aparam;
  return deepmd::runtime::EvaluatePeriodic(**pot, in, out);
}

bool Same(const ComputeOutput& a, const ComputeOutput& b) {
  return a.energy == b.energy && a.force == b.force && a.virial == b.virial && a.force_mag == b.force_mag;
}

bool Finite(const ComputeOutput& o) {
  bool ok = std::isfinite(o.energy);
  for (double v : o.force) ok = ok && std::isfinite(v);
  for (double v : o.virial) ok = ok && std::isfinite(v);
  return ok;
}

class Fuzzer {
 public:
  Fuzzer(std::vector<Model> models, uint64_t seed, const std::string& dir)
      : models_(std::move(models)), rng_(seed), dir_(dir) {}

  size_t Pick(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }
  double Uniform() { return std::uniform_real_distribution<double>(0, 1)(rng_); }

  // One archive mutation: returns false (after printing why) when the result is neither the original nor
  // a clean error.
  bool ArchiveMutation() {
    const Model& model = models_[Pick(models_.size())];
    std::string label;
    const std::string bytes = MutateArchive(model, label);
    const std::string path = absl::StrCat(dir_, "/mutated.pt2");
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    Begin(absl::StrCat(model.path, ": ", label));
    ComputeOutput out;
    absl::Status s = Evaluate(path, nullptr, system_, out);
    End();
    ++counts_[label.substr(0, label.find(' '))];
    if (!s.ok()) {
      if (s.message().empty()) return Report("an error without a message");
      ++errors_;
      return true;
    }
    if (!Same(out, model.reference)) {
      return Report(
          absl::StrCat("different numbers, no error (energy ", out.energy, " vs ", model.reference.energy, ")"));
    }
    ++unchanged_;
    return true;
  }

  // One extended-XYZ mutation on the first model: a clean error, or finite results.
  bool XyzMutation(const std::string& original) {
    std::string label;
    const std::string text = MutateXyz(original, label);
    Begin(absl::StrCat("xyz: ", label, "\n", text));
    std::istringstream in(text);
    absl::StatusOr<deepmd::tools::Frame> frame = deepmd::tools::ReadExtXyz(in);
    absl::Status s = frame.status();
    ComputeOutput out;
    if (s.ok()) {
      System system;
      system.coord = frame->coord;
      system.spin = frame->spin;
      system.cell = frame->has_lattice ? frame->lattice : std::array<double, 9>{1, 0, 0, 0, 1, 0, 0, 0, 1};
      system.pbc = frame->pbc;
      s = Evaluate(models_[0].path, &frame->species, system, out);
    }
    End();
    ++counts_["xyz"];
    if (!s.ok()) {
      if (s.message().empty()) return Report("an error without a message");
      ++errors_;
      return true;
    }
    if (!Finite(out)) return Report("non-finite results, no error");
    ++unchanged_;  // evaluated cleanly
    return true;
  }

  void Summary(int64_t tried) const {
    std::printf("fuzz: %lld mutations tried: %lld clean errors, %lld original results (or clean xyz evaluations)\n",
                static_cast<long long>(tried), static_cast<long long>(errors_), static_cast<long long>(unchanged_));
    for (const auto& [kind, n] : counts_) std::printf("  %-18s %d\n", kind.c_str(), n);
  }

 private:
  void Begin(const std::string& label) {
    g_current = label;
    std::fprintf(stderr, "%s\n", label.substr(0, label.find('\n')).c_str());  // last line before a crash
    g_started_ms = NowMs();
  }
  void End() { g_started_ms = 0; }
  bool Report(const std::string& what) {
    std::fprintf(stderr, "FAIL: %s on mutation: %s\n", what.c_str(), g_current.c_str());
    return false;
  }

  std::string FlipBit(std::string bytes, size_t at, std::string& label, const std::string& where) {
    const int bit = static_cast<int>(Pick(8));
    bytes[at] ^= static_cast<char>(1 << bit);
    label = absl::StrCat(label, " bit ", bit, " of byte ", at, where);
    return bytes;
  }

  Json EditValue(const Json& value, std::string& how) {
    switch (Pick(6)) {
      case 0:
        how = "null";
        return nullptr;
      case 1:
        how = "a string";
        return value.dump();
      case 2:
        if (value.is_number()) {
          const double factors[] = {0.5, 2.0, 1e6, -1.0, 0.0, 1.0000001};
          const double f = factors[Pick(6)];
          how = absl::StrCat("x ", f);
          return value.is_number_integer() ? Json(static_cast<int64_t>(value.get<double>() * f))
                                           : Json(value.get<double>() * f);
        }
        [[fallthrough]];
      case 3:
        if (value.is_number_integer()) {
          how = "+-1";
          return value.get<int64_t>() + (Pick(2) ? 1 : -1);
        }
        if (value.is_boolean()) {
          how = "flipped";
          return !value.get<bool>();
        }
        [[fallthrough]];
      case 4:
        if (value.is_array() && !value.empty()) {
          Json v = value;
          const size_t k = Pick(v.size());
          switch (Pick(4)) {
            case 0:
              how = "element dropped";
              v.erase(v.begin() + static_cast<long>(k));
              break;
            case 1:
              how = "element duplicated";
              v.push_back(v[k]);
              break;
            case 2:
              how = "reversed";
              std::reverse(v.begin(), v.end());
              break;
            default: {
              std::string inner;
              v[k] = EditValue(v[k], inner);
              how = absl::StrCat("element ", k, " ", inner);
            }
          }
          return v;
        }
        if (value.is_string()) {
          how = "renamed";
          return value.get<std::string>() + "x";
        }
        [[fallthrough]];
      default:
        how = "[]";
        return Json::array();
    }
  }

  std::string MutateArchive(const Model& model, std::string& label) {
    const std::string& bytes = model.bytes;
    Entries entries = model.entries;
    const std::string top = entries[0].first.substr(0, entries[0].first.find('/') + 1);
    auto find = [&](const std::string& below) {
      for (size_t k = 0; k < entries.size(); ++k)
        if (entries[k].first == top + below) return k;
      return entries.size();
    };
    const size_t meta = find("metadata.json");
    switch (Pick(14)) {
      case 0:
        label = "flip";
        return FlipBit(bytes, Pick(bytes.size()), label, " of the file");
      case 1: {  // inside one entry's data, where the CRC-32 is the only guard
        const std::vector<deepmd::runtime::ZipEntry> zip = *deepmd::runtime::ReadZipDirectory(bytes);
        const auto& e = zip[Pick(zip.size())];
        label = "flip-data";
        return FlipBit(bytes, e.data_offset + Pick(e.compressed_size), label, absl::StrCat(" in ", e.name));
      }
      case 2: {
        std::string b = bytes;
        const size_t at = Pick(b.size()), n = 1 + Pick(16);
        for (size_t k = at; k < std::min(b.size(), at + n); ++k) b[k] = static_cast<char>(Pick(256));
        label = absl::StrCat("overwrite ", n, " bytes at ", at);
        return b;
      }
      case 3: {
        const size_t n = Pick(bytes.size());
        label = absl::StrCat("truncate to ", n, " of ", bytes.size(), " bytes");
        return bytes.substr(0, n);
      }
      case 4:
        label = "append 17 bytes";
        return bytes + "garbage after end";
      case 5:
      case 6:
      case 7: {  // a metadata value edited, the ZIP rebuilt with a valid CRC
        Json j = Json::parse(entries[meta].second);
        std::vector<std::string> keys;
        for (const auto& [k, v] : j.items()) keys.push_back(k);
        const std::string key = keys[Pick(keys.size())];
        std::string how;
        if (Pick(8) == 0) {
          j.erase(key);
          how = "removed";
        } else {
          j[key] = EditValue(j[key], how);
        }
        label = absl::StrCat("metadata ", key, " ", how);
        entries[meta].second = j.dump(Pick(2) ? 2 : -1);
        return deepmd::testing::WriteZip(entries);
      }
      case 8: {  // a byte of metadata.json flipped under a valid CRC: only parsing and consistency guard it
        std::string& text = entries[meta].second;
        const size_t at = Pick(text.size());
        text[at] ^= static_cast<char>(1 << Pick(8));
        label = absl::StrCat("metadata-byte ", at, " flipped (valid CRC)");
        return deepmd::testing::WriteZip(entries);
      }
      case 9: {
        const size_t a = Pick(entries.size()), b = Pick(entries.size());
        std::swap(entries[a].second, entries[b].second);
        label = absl::StrCat("swap data of ", entries[a].first, " and ", entries[b].first);
        return deepmd::testing::WriteZip(entries);
      }
      case 10: {
        const size_t a = Pick(entries.size());
        label = absl::StrCat("duplicate ", entries[a].first);
        entries.insert(entries.begin() + static_cast<long>(Pick(entries.size() + 1)), entries[a]);
        return deepmd::testing::WriteZip(entries);
      }
      case 11: {
        const size_t a = Pick(entries.size());
        label = absl::StrCat("remove ", entries[a].first);
        entries.erase(entries.begin() + static_cast<long>(a));
        return deepmd::testing::WriteZip(entries);
      }
      case 12: {
        switch (Pick(3)) {
          case 0: {  // same contents, other order: must give the original result
            std::reverse(entries.begin(), entries.end());
            label = "reorder entries (reversed)";
            break;
          }
          case 1: {
            const size_t a = Pick(entries.size());
            label = absl::StrCat("rename ", entries[a].first);
            entries[a].first += "x";
            break;
          }
          default: {  // compressed: the same bytes, inflated
            label = "reorder-deflate (all entries deflated)";
            return deepmd::testing::WriteZip(entries, true);
          }
        }
        return deepmd::testing::WriteZip(entries);
      }
      default: {
        const Model& other = models_[Pick(models_.size())];
        if (Pick(2) || &other == &model) {  // an archive exported before content hashes: same result
          Json j = Json::parse(entries[meta].second);
          j.erase("content_sha256");
          entries[meta].second = j.dump(2);
          label = "drop content_sha256";
        } else {
          const size_t graph = find("model/forward_lower.pt");
          const std::string other_top = other.entries[0].first.substr(0, other.entries[0].first.find('/') + 1);
          for (const auto& [name, data] : other.entries) {
            if (name == other_top + "model/forward_lower.pt") entries[graph].second = data;
          }
          label = absl::StrCat("replace-graph with ", other.path, "'s");
        }
        return deepmd::testing::WriteZip(entries);
      }
    }
  }

  std::string MutateXyz(const std::string& original, std::string& label) {
    std::vector<std::string> lines = absl::StrSplit(original, '\n');
    auto join = [&] { return absl::StrJoin(lines, "\n"); };
    const size_t line = Pick(lines.size());
    switch (Pick(10)) {
      case 0: {
        std::string t = original;
        const size_t at = Pick(t.size());
        t[at] ^= static_cast<char>(1 << Pick(8));
        label = absl::StrCat("flip a bit of byte ", at);
        return t;
      }
      case 1:
        label = absl::StrCat("delete line ", line);
        lines.erase(lines.begin() + static_cast<long>(line));
        return join();
      case 2:
        label = absl::StrCat("duplicate line ", line);
        lines.insert(lines.begin() + static_cast<long>(line), lines[line]);
        return join();
      case 3: {
        const char* counts[] = {"0", "-1", "7", "5", "99999999999", "1e3", "x", ""};
        lines[0] = counts[Pick(8)];
        label = absl::StrCat("atom count '", lines[0], "'");
        return join();
      }
      case 4: {  // a number replaced
        const char* values[] = {"nan", "inf", "-inf", "1e308", "1e-320", "", "0x10", "1,5", "1e999", "--1"};
        std::vector<std::string> words = absl::StrSplit(lines[line], ' ');
        const size_t w = Pick(words.size());
        words[w] = values[Pick(10)];
        lines[line] = absl::StrJoin(words, " ");
        label = absl::StrCat("line ", line, " word ", w, " -> '", words[w], "'");
        return join();
      }
      case 5: {
        const char* lattices[] = {"0 0 0 0 9 0 0 0 9",  "9 0 0 9 0 0 0 0 9",          "nan 0 0 0 9 0 0 0 9",
                                  "9 0 0 0 9",          "1e-9 0 0 0 1e-9 0 0 0 1e-9", "1e300 0 0 0 9 0 0 0 9",
                                  "-9 0 0 0 9 0 0 0 9", "0.5 0 0 0 0.5 0 0 0 0.5"};
        lines[1] = absl::StrCat("Lattice=\"", lattices[Pick(8)], "\" Properties=species:S:1:pos:R:3 pbc=\"T T T\"");
        label = absl::StrCat("comment '", lines[1], "'");
        return join();
      }
      case 6: {
        const char* comments[] = {"Properties=species:S:1:pos:R:3",
                                  "Lattice=\"9 0 0 0 9 0 0 0 9\" pbc=\"T F\"",
                                  "Lattice=\"9 0 0 0 9 0 0 0 9\" Properties=pos:R:3:species:S:1 pbc=\"T T T\"",
                                  "Lattice=\"9 0 0 0 9 0 0 0 9\" Properties=species:S:1:pos:R:2 pbc=\"T T T\"",
                                  "Lattice=\"9 0 0 0 9 0 0 0 9 Properties=species:S:1:pos:R:3",
                                  ""};
        lines[1] = comments[Pick(6)];
        label = absl::StrCat("comment '", lines[1], "'");
        return join();
      }
      case 7: {
        const char* species[] = {"Xx", "o", "", "H H", "O\t"};
        if (line >= 2 && !lines[line].empty()) lines[line] = absl::StrCat(species[Pick(5)], lines[line].substr(1));
        label = absl::StrCat("species of line ", line);
        return join();
      }
      case 8:
        label = "a second frame";
        return original + original;
      default: {
        const size_t n = Pick(original.size());
        label = absl::StrCat("truncate to ", n, " bytes");
        return original.substr(0, n);
      }
    }
  }

  std::vector<Model> models_;
  std::mt19937_64 rng_;
  std::string dir_;
  System system_;
  int64_t errors_ = 0, unchanged_ = 0;
  std::map<std::string, int> counts_;
};

const char kXyz[] =
    "6\nLattice=\"9 0 0 0 9.5 0 0 0 10\" Properties=species:S:1:pos:R:3 pbc=\"T T T\"\n"
    "O 1.0 1.0 1.0\nH 1.9 1.2 1.0\nH 0.8 1.9 1.1\nO 4.0 4.2 3.9\nH 4.8 4.9 4.1\nH 3.3 4.7 4.5\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: archive_fuzz_test ARCHIVE...\n");
    return 2;
  }
  setenv("DEEPMD_NUM_THREADS", "1", 1);  // one thread: the same input gives the same bits
  const char* seconds_env = std::getenv("FUZZ_SECONDS");
  const char* seed_env = std::getenv("FUZZ_SEED");
  const double seconds = seconds_env ? std::atof(seconds_env) : 40;
  const uint64_t seed = seed_env ? std::strtoull(seed_env, nullptr, 10) : 1;
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = tmp ? tmp : "/tmp";
  std::vector<Model> models;
  for (int k = 1; k < argc; ++k) {
    Model m;
    m.path = argv[k];
    m.bytes = ReadFile(m.path);
    const std::vector<deepmd::runtime::ZipEntry> zip = *deepmd::runtime::ReadZipDirectory(m.bytes);
    for (const auto& e : zip) {
      m.entries.emplace_back(e.name, std::string(deepmd::runtime::StoredData(m.bytes, e)));
    }
    if (absl::Status s = Evaluate(m.path, nullptr, System(), m.reference); !s.ok()) {
      std::fprintf(stderr, "FAIL: the unaltered %s does not evaluate: %s\n", argv[k], std::string(s.message()).c_str());
      return 1;
    }
    models.push_back(std::move(m));
  }
  std::thread(Watchdog).detach();
  Fuzzer fuzzer(std::move(models), seed, dir);
  const auto stop = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int64_t tried = 0;
  bool ok = true;
  while (ok && std::chrono::steady_clock::now() < stop) {
    ok = tried % 4 == 3 ? fuzzer.XyzMutation(kXyz) : fuzzer.ArchiveMutation();
    ++tried;
  }
  fuzzer.Summary(tried);
  std::printf("seed %llu, %.0f s%s\n", static_cast<unsigned long long>(seed), seconds, ok ? "" : ": FAILED");
  return ok ? 0 : 1;
}
