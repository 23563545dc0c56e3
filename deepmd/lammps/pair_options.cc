#include "deepmd/lammps/pair_options.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace deepmd::lammps {
namespace {

constexpr const char* kAccepted[] = {"out_freq",
                                     "out_file",
                                     "atomic",
                                     "relative",
                                     "relative_v",
                                     "fparam",
                                     "fparam_from_compute",
                                     "fparam_from_fix",
                                     "aparam",
                                     "aparam_from_compute",
                                     "virtual_len",
                                     "spin_norm"};
// deepmd-kit's keywords this style refuses, and why (each also ends the list of model files).
constexpr std::pair<const char*, const char*> kRefused[] = {
    {"ttm",
     "feeds fix ttm's electron temperatures to the model; deepmd-kit reads them from fix ttm's internal grid "
     "through a subclass of it, which no public LAMMPS interface allows, so it is not supported. Give the "
     "electron temperature as 'fparam V', or per atom as 'aparam_from_compute ID' (a per-atom compute holding "
     "each atom's electron temperature)"},
    {"charge_spin",
     "feeds models trained with a charge/spin embedding (add_chg_spin_ebd), which this runtime does not run (the "
     "exporter refuses them), so no archive takes it: remove it"},
};

absl::Status Error(absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("pair_style deepmd: ", message));
}

bool IsKeyword(const std::string& arg) {
  if (std::find(std::begin(kAccepted), std::end(kAccepted), arg) != std::end(kAccepted)) return true;
  return std::any_of(std::begin(kRefused), std::end(kRefused), [&](const auto& r) { return arg == r.first; });
}

absl::Status NeedValue(absl::Span<const std::string> args, size_t i) {
  if (i + 1 < args.size() && !IsKeyword(args[i + 1])) return absl::OkStatus();
  return Error(absl::StrCat("'", args[i], "' needs a value"));
}

absl::StatusOr<double> Number(const std::string& keyword, const std::string& text) {
  double value;
  if (!absl::SimpleAtod(text, &value) || !std::isfinite(value)) {
    return Error(absl::StrCat("'", keyword, "' expects a number, got '", text, "'"));
  }
  return value;
}

// The numbers after args[i] up to the next keyword.
absl::Status Numbers(absl::Span<const std::string> args, size_t& i, std::vector<double>& values) {
  const std::string& key = args[i];
  if (absl::Status st = NeedValue(args, i); !st.ok()) return st;
  for (++i; i < args.size() && !IsKeyword(args[i]); ++i) {
    absl::StatusOr<double> x = Number(key, args[i]);
    if (!x.ok()) return x.status();
    values.push_back(*x);
  }
  return absl::OkStatus();
}

bool Given(const std::vector<std::string>& given, const char* key) {
  return std::find(given.begin(), given.end(), key) != given.end();
}

}  // namespace

std::string PairStyleKeywords() { return absl::StrJoin(kAccepted, " "); }

absl::StatusOr<PairStyleOptions> ParsePairStyle(absl::Span<const std::string> args) {
  PairStyleOptions o;
  size_t i = 0;
  for (; i < args.size() && !IsKeyword(args[i]); ++i) o.models.push_back(args[i]);
  if (o.models.empty()) {
    return Error("name at least one model archive (pair_style deepmd MODEL.pt2 [MODEL2.pt2 ...] [keywords])");
  }
  std::vector<std::string> given;  // keywords, in order
  while (i < args.size()) {
    const std::string key = args[i];
    if (Given(given, key.c_str())) return Error(absl::StrCat("'", key, "' is given twice"));
    for (const auto& [refused, why] : kRefused) {
      if (key == refused) return Error(absl::StrCat("'", key, "' ", why));
    }
    if (key == "atomic") {
      o.atomic = true;
      ++i;
    } else if (key == "out_freq") {
      if (absl::Status st = NeedValue(args, i); !st.ok()) return st;
      if (!absl::SimpleAtoi(args[i + 1], &o.out_freq) || o.out_freq < 0) {
        return Error(absl::StrCat("out_freq must be an integer >= 0 (0: no model deviation), got '", args[i + 1], "'"));
      }
      i += 2;
    } else if (key == "out_file" || key == "fparam_from_compute" || key == "aparam_from_compute") {
      if (absl::Status st = NeedValue(args, i); !st.ok()) return st;
      (key == "out_file"              ? o.out_file
       : key == "fparam_from_compute" ? o.fparam_compute
                                      : o.aparam_compute) = args[i + 1];
      i += 2;
    } else if (key == "fparam_from_fix") {
      if (absl::Status st = NeedValue(args, i); !st.ok()) return st;
      o.fparam_fix = args[i + 1];
      i += 2;
      if (i < args.size() && !IsKeyword(args[i])) {  // the optional 1-based index into the fix's vector
        int index;
        if (!absl::SimpleAtoi(args[i], &index) || index < 1) {
          return Error(absl::StrCat("fparam_from_fix ", o.fparam_fix,
                                    ": the index into the fix's vector must be a positive integer (1-based), got '",
                                    args[i], "'"));
        }
        o.fparam_fix_index = index - 1;
        ++i;
      }
    } else if (key == "relative" || key == "relative_v") {
      if (absl::Status st = NeedValue(args, i); !st.ok()) return st;
      absl::StatusOr<double> x = Number(key, args[i + 1]);
      if (!x.ok()) return x.status();
      if (*x < 0) return Error(absl::StrCat(key, " must be >= 0"));
      (key == "relative" ? o.relative : o.relative_v) = *x;
      i += 2;
    } else if (key == "fparam" || key == "aparam") {
      if (absl::Status st = Numbers(args, i, key == "fparam" ? o.fparam : o.aparam); !st.ok()) return st;
    } else if (key == "virtual_len" || key == "spin_norm") {
      std::vector<double> ignored;
      if (absl::Status st = Numbers(args, i, ignored); !st.ok()) return st;
      o.warnings.push_back(absl::StrCat("pair_style deepmd: '", key,
                                        "' is ignored: spin archives carry their own virtual-atom scale "
                                        "(virtual_scale), and deepmd-kit ignores it too"));
    } else {
      return Error(absl::StrCat("unknown keyword '", key, "' (known: ", PairStyleKeywords(), ")"));
    }
    given.push_back(key);
  }
  // One source per kind of parameter, as in deepmd-kit.
  const int fparam_sources =
      Given(given, "fparam") + Given(given, "fparam_from_compute") + Given(given, "fparam_from_fix");
  if (fparam_sources > 1) {
    return Error("give the frame parameters one way: fparam, fparam_from_compute or fparam_from_fix, not several");
  }
  if (Given(given, "aparam") && Given(given, "aparam_from_compute")) {
    return Error("give the atomic parameters one way: aparam or aparam_from_compute, not both");
  }
  // These shape the model deviation's output, which one model does not have: silently ignoring them
  // would leave the user waiting for a file or per-atom values that never come.
  for (const char* deviation_only : {"out_file", "atomic", "relative", "relative_v"}) {
    if (!Given(given, deviation_only)) continue;
    if (o.models.size() == 1) {
      return Error(absl::StrCat("'", deviation_only,
                                "' applies to the model deviation, which needs two or more models, but only '",
                                o.models[0], "' is given: name the other models (pair_style deepmd M1.pt2 M2.pt2 ... ",
                                deviation_only, " ...) or remove '", deviation_only, "'"));
    }
    if (o.out_freq == 0) {
      o.warnings.push_back(absl::StrCat("pair_style deepmd: '", deviation_only,
                                        "' has no effect: out_freq 0 turns the model deviation off"));
    }
  }
  return o;
}

namespace {

// LAMMPS's type bounds (utils::bounds): "*", "N", "*N", "N*", "M*N".
bool Bounds(const std::string& text, int ntypes, int& lo, int& hi) {
  const size_t star = text.find('*');
  if (star == std::string::npos) {
    if (!absl::SimpleAtoi(text, &lo)) return false;
    hi = lo;
    return true;
  }
  const std::string left = text.substr(0, star), right = text.substr(star + 1);
  lo = 1, hi = ntypes;
  return (left.empty() || absl::SimpleAtoi(left, &lo)) && (right.empty() || absl::SimpleAtoi(right, &hi));
}

}  // namespace

absl::Status CheckCoversAllTypes(const std::string& first, const std::string& second, int ntypes) {
  for (const std::string& arg : {first, second}) {
    int lo, hi;
    if (!Bounds(arg, ntypes, lo, hi) || lo != 1 || hi != ntypes) {
      return absl::InvalidArgumentError(
          absl::StrCat("pair_coeff: the model is one many-body interaction of all atom types, so pair_coeff must cover "
                       "every type (pair_coeff * * ...), not '",
                       first, " ", second, "'"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<TypeMapping> MapTypes(absl::Span<const std::string> names, absl::Span<const std::string> type_map,
                                     int ntypes) {
  TypeMapping mapping;
  mapping.model_type.assign(ntypes + 1, -1);
  const int nmodel = static_cast<int>(type_map.size());
  const std::string elements = absl::StrCat("[", absl::StrJoin(type_map, " "), "]");
  if (names.empty()) {
    // deepmd-kit's default: LAMMPS type t is the model's type t-1.
    if (ntypes > nmodel) {
      return absl::InvalidArgumentError(absl::StrCat(
          "pair_coeff * * without element names maps atom type t to the model's t-th element, but there are ", ntypes,
          " atom types and the model has ", nmodel, " elements ", elements,
          ": name one element (or NULL) per atom type, e.g. pair_coeff * * ", absl::StrJoin(type_map, " "), " NULL"));
    }
    for (int t = 1; t <= ntypes; ++t) mapping.model_type[t] = t - 1;
    if (nmodel > ntypes) {
      mapping.warning = absl::StrCat("pair_coeff * * without element names maps the ", ntypes,
                                     " atom type(s) onto the first of the model's elements ", elements,
                                     "; name them (pair_coeff * * ELEMENT ...) if that is not what the data means");
    }
    return mapping;
  }
  if (static_cast<int>(names.size()) != ntypes) {
    // deepmd-kit would make missing types NULL and drop extra names; a forgotten name is more likely a
    // mistake than a wish, so say it.
    return absl::InvalidArgumentError(
        absl::StrCat("pair_coeff * * needs one element name (or NULL) per atom type: ", ntypes, " types, ",
                     names.size(), " names given; the model's elements are ", elements,
                     static_cast<int>(names.size()) < ntypes ? " (write NULL for types the model should ignore)"
                                                             : " (remove the extra names)"));
  }
  for (int t = 1; t <= ntypes; ++t) {
    const std::string& name = names[t - 1];
    if (name == "NULL") continue;
    auto it = std::find(type_map.begin(), type_map.end(), name);
    if (it == type_map.end()) {
      return absl::InvalidArgumentError(absl::StrCat("pair_coeff: element '", name, "' (atom type ", t,
                                                     ") is not in the model, whose elements are ", elements,
                                                     "; use one of them, or NULL to leave the type out"));
    }
    mapping.model_type[t] = static_cast<int>(it - type_map.begin());
  }
  return mapping;
}

}  // namespace deepmd::lammps
