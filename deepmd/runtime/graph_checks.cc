#include "deepmd/runtime/graph_checks.h"

#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace deepmd::runtime {
namespace {

std::optional<torch::jit::Module> Submodule(const torch::jit::Module& m, const char* name) {
  if (!m.hasattr(name) || !m.attr(name).isModule()) return std::nullopt;
  return m.attr(name).toModule();
}

class Checker {
 public:
  Checker(const std::string& entry) : entry_(entry) {}
  // Compares when the attribute is there with the expected type; `show` renders both sides.
  template <typename T, typename Read, typename Show>
  void Check(const std::optional<torch::jit::Module>& m, const char* attr, const char* key, const T& expected,
             Read read, Show show) {
    if (!status_.ok() || !m || !m->hasattr(attr)) return;
    std::optional<T> found = read(m->attr(attr));
    if (found && !(*found == expected)) {
      status_ = absl::InvalidArgumentError(absl::StrCat(
          "metadata.json says ", key, " = ", show(expected), " but ", entry_, " has ", show(*found),
          ": the metadata contradicts the graph (corrupt or edited); re-export the model or download it again"));
    }
  }
  const absl::Status& status() const { return status_; }

 private:
  std::string entry_;
  absl::Status status_;
};

std::optional<double> ReadDouble(const c10::IValue& v) {
  return v.isDouble() ? std::optional<double>(v.toDouble()) : std::nullopt;
}
std::optional<int> ReadInt(const c10::IValue& v) {
  return v.isInt() ? std::optional<int>(static_cast<int>(v.toInt())) : std::nullopt;
}
std::optional<bool> ReadBool(const c10::IValue& v) {
  return v.isBool() ? std::optional<bool>(v.toBool()) : std::nullopt;
}
std::optional<std::vector<int>> ReadInts(const c10::IValue& v) {
  if (!v.isIntList()) return std::nullopt;
  std::vector<int> out;
  for (int64_t x : v.toIntVector()) out.push_back(static_cast<int>(x));
  return out;
}
std::optional<std::vector<bool>> ReadBools(const c10::IValue& v) {
  if (!v.isBoolList()) return std::nullopt;
  std::vector<bool> out;
  for (bool b : v.toBoolList()) out.push_back(b);
  return out;
}
std::optional<std::vector<std::string>> ReadStrings(const c10::IValue& v) {
  if (!v.isList()) return std::nullopt;
  std::vector<std::string> out;
  for (const c10::IValue& s : v.toListRef()) {
    if (!s.isString()) return std::nullopt;
    out.push_back(s.toStringRef());
  }
  return out;
}
std::optional<std::vector<double>> ReadDoubles(const c10::IValue& v) {
  if (!v.isTensor()) return std::nullopt;
  const torch::Tensor t = v.toTensor().to(torch::kFloat64).contiguous().reshape({-1});
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

template <typename T>
std::string ShowValue(const T& v) {
  return absl::StrCat(v);
}
template <typename T>
std::string ShowList(const std::vector<T>& v) {
  return absl::StrCat("[", absl::StrJoin(v, ", "), "]");
}
std::string ShowBools(const std::vector<bool>& v) {
  std::vector<std::string> words;
  for (bool b : v) words.push_back(b ? "true" : "false");
  return absl::StrCat("[", absl::StrJoin(words, ", "), "]");
}
std::string ShowBool(bool b) { return b ? "true" : "false"; }

}  // namespace

absl::Status CheckGraphAgainstMetadata(const torch::jit::Module& graph, const ArchiveMetadata& m,
                                       const std::string& entry) {
  try {
    const std::optional<torch::jit::Module> model = Submodule(graph, "model");
    Checker c(entry);
    c.Check(model, "type_map", "type_map", m.type_map, ReadStrings, ShowList<std::string>);
    c.Check(model, "rcut", "rcut", m.rcut, ReadDouble, ShowValue<double>);
    c.Check(model, "sel", "sel", m.sel, ReadInts, ShowList<int>);
    c.Check(model, "is_spin", "is_spin", m.is_spin, ReadBool, ShowBool);
    std::optional<torch::jit::Module> energy = model;
    if (m.is_spin) {
      c.Check(model, "use_spin", "use_spin", m.use_spin, ReadBools, ShowBools);
      c.Check(model, "virtual_scale", "virtual_scale", m.virtual_scale, ReadDoubles, ShowList<double>);
      if (model) energy = Submodule(*model, "backbone");
    }
    const std::optional<torch::jit::Module> descriptor = energy ? Submodule(*energy, "descriptor") : std::nullopt;
    const std::optional<torch::jit::Module> fitting = energy ? Submodule(*energy, "fitting") : std::nullopt;
    c.Check(descriptor, "nlayers", "nlayers", m.nlayers, ReadInt, ShowValue<int>);
    c.Check(fitting, "dim_fparam", "dim_fparam", m.dim_fparam, ReadInt, ShowValue<int>);
    c.Check(fitting, "dim_aparam", "dim_aparam", m.dim_aparam, ReadInt, ShowValue<int>);
    c.Check(fitting, "has_default_fparam", "has_default_fparam", m.has_default_fparam, ReadBool, ShowBool);
    return c.status();
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(entry, ": cannot read the graph's attributes: ", e.what_without_backtrace()));
  }
}

}  // namespace deepmd::runtime
