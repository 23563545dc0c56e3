#include "deepmd/lammps/pair_options.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace deepmd::lammps {
namespace {

constexpr const char* kKeywords[] = {"out_freq", "out_file", "atomic", "relative", "relative_v", "fparam", "aparam"};

bool IsKeyword(const std::string& arg) {
  return std::find(std::begin(kKeywords), std::end(kKeywords), arg) != std::end(kKeywords);
}

absl::Status NeedValue(absl::Span<const std::string> args, size_t i) {
  if (i + 1 < args.size() && !IsKeyword(args[i + 1])) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("pair_style deepmd: '", args[i], "' needs a value"));
}

absl::StatusOr<double> Number(const std::string& keyword, const std::string& text) {
  double value;
  if (!absl::SimpleAtod(text, &value) || !std::isfinite(value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("pair_style deepmd: '", keyword, "' expects a number, got '", text, "'"));
  }
  return value;
}

}  // namespace

std::string PairStyleKeywords() { return absl::StrJoin(kKeywords, " "); }

absl::StatusOr<PairStyleOptions> ParsePairStyle(absl::Span<const std::string> args) {
  PairStyleOptions o;
  size_t i = 0;
  for (; i < args.size() && !IsKeyword(args[i]); ++i) o.models.push_back(args[i]);
  if (o.models.empty()) {
    return absl::InvalidArgumentError(
        "pair_style deepmd: name at least one model archive (pair_style deepmd MODEL.pt2 [MODEL2.pt2 ...] "
        "[keywords])");
  }
  std::vector<std::string> given;  // keywords, in order
  while (i < args.size()) {
    const std::string key = args[i];
    if (key == "atomic") {
      o.atomic = true;
      ++i;
    } else if (key == "out_freq") {
      if (absl::Status st = NeedValue(args, i); !st.ok()) return st;
      if (!absl::SimpleAtoi(args[i + 1], &o.out_freq) || o.out_freq <= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("pair_style deepmd: out_freq must be a positive integer, got '", args[i + 1], "'"));
      }
      i += 2;
    } else if (key == "out_file") {
      if (absl::Status st = NeedValue(args, i); !st.ok()) return st;
      o.out_file = args[i + 1];
      i += 2;
    } else if (key == "relative" || key == "relative_v") {
      if (absl::Status st = NeedValue(args, i); !st.ok()) return st;
      absl::StatusOr<double> x = Number(key, args[i + 1]);
      if (!x.ok()) return x.status();
      if (*x < 0) return absl::InvalidArgumentError(absl::StrCat("pair_style deepmd: ", key, " must be >= 0"));
      (key == "relative" ? o.relative : o.relative_v) = *x;
      i += 2;
    } else if (key == "fparam" || key == "aparam") {
      std::vector<double>& values = key == "fparam" ? o.fparam : o.aparam;
      if (absl::Status st = NeedValue(args, i); !st.ok()) return st;
      for (++i; i < args.size() && !IsKeyword(args[i]); ++i) {
        absl::StatusOr<double> x = Number(key, args[i]);
        if (!x.ok()) return x.status();
        values.push_back(*x);
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("pair_style deepmd: unknown keyword '", key, "' (known: ", PairStyleKeywords(), ")"));
    }
    given.push_back(key);
  }
  // These shape the model deviation's output, which one model does not have: silently ignoring them
  // would leave the user waiting for a file or per-atom values that never come.
  for (const char* deviation_only : {"out_file", "atomic", "relative", "relative_v"}) {
    if (o.models.size() > 1 || std::find(given.begin(), given.end(), deviation_only) == given.end()) continue;
    return absl::InvalidArgumentError(
        absl::StrCat("pair_style deepmd: '", deviation_only,
                     "' applies to the model deviation, which needs two or more models, "
                     "but only '",
                     o.models[0], "' is given: name the other models (pair_style deepmd M1.pt2 M2.pt2 ... ",
                     deviation_only, " ...) or remove '", deviation_only, "'"));
  }
  return o;
}

absl::StatusOr<std::vector<int>> MapTypes(absl::Span<const std::string> names, absl::Span<const std::string> type_map,
                                          int ntypes) {
  if (static_cast<int>(names.size()) != ntypes) {
    return absl::InvalidArgumentError(
        absl::StrCat("pair_coeff * * needs one element name (or NULL) per atom type: ", ntypes, " types, ",
                     names.size(), " names given; the model's elements are [", absl::StrJoin(type_map, " "), "]"));
  }
  std::vector<int> model_type(ntypes + 1, -1);  // indexed by LAMMPS type (1-based)
  for (int t = 1; t <= ntypes; ++t) {
    const std::string& name = names[t - 1];
    if (name == "NULL") continue;
    auto it = std::find(type_map.begin(), type_map.end(), name);
    if (it == type_map.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("pair_coeff: element '", name, "' (atom type ", t, ") is not in the model, whose elements are [",
                       absl::StrJoin(type_map, " "), "]; use one of them, or NULL to leave the type out"));
    }
    model_type[t] = static_cast<int>(it - type_map.begin());
  }
  return model_type;
}

}  // namespace deepmd::lammps
