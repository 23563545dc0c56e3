#include "deepmd/tools/extxyz.h"

#include <map>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace deepmd::tools {
namespace {

// key=value pairs of the comment line; values may be "quoted with spaces".
std::map<std::string, std::string> ParseComment(const std::string& line) {
  std::map<std::string, std::string> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && line[i] == ' ') ++i;
    const size_t eq = line.find('=', i);
    if (eq == std::string::npos) break;
    std::string key = line.substr(i, eq - i);
    i = eq + 1;
    std::string value;
    if (i < line.size() && line[i] == '"') {
      const size_t end = line.find('"', i + 1);
      value = line.substr(i + 1, end == std::string::npos ? std::string::npos : end - i - 1);
      i = end == std::string::npos ? line.size() : end + 1;
    } else {
      const size_t end = line.find(' ', i);
      value = line.substr(i, end == std::string::npos ? std::string::npos : end - i);
      i = end == std::string::npos ? line.size() : end;
    }
    // Keys are case-insensitive in the format; store lower case.
    for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out[key] = value;
  }
  return out;
}

absl::Status LineError(int line, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("extended XYZ line ", line, ": ", what));
}

}  // namespace

absl::StatusOr<Frame> ReadExtXyz(std::istream& in) {
  std::string line;
  if (!std::getline(in, line)) return LineError(1, "empty file");
  int natoms = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &natoms) || natoms < 0) {
    return LineError(1, absl::StrCat("expected the number of atoms, got '", line, "'"));
  }
  if (!std::getline(in, line)) return LineError(2, "missing the comment line");
  const auto comment = ParseComment(line);
  Frame frame;
  if (auto it = comment.find("lattice"); it != comment.end()) {
    std::vector<std::string> parts = absl::StrSplit(it->second, ' ', absl::SkipEmpty());
    if (parts.size() != 9) return LineError(2, "Lattice needs 9 numbers");
    for (int k = 0; k < 9; ++k) {
      if (!absl::SimpleAtod(parts[k], &frame.lattice[k]))
        return LineError(2, absl::StrCat("bad Lattice number '", parts[k], "'"));
    }
    frame.has_lattice = true;
    frame.pbc = {true, true, true};
  }
  if (auto it = comment.find("pbc"); it != comment.end()) {
    std::vector<std::string> parts = absl::StrSplit(it->second, ' ', absl::SkipEmpty());
    if (parts.size() != 3) return LineError(2, "pbc needs 3 flags");
    for (int d = 0; d < 3; ++d) frame.pbc[d] = parts[d] == "T" || parts[d] == "True" || parts[d] == "1";
    if (!frame.has_lattice && (frame.pbc[0] || frame.pbc[1] || frame.pbc[2])) {
      return LineError(2, "pbc is periodic but there is no Lattice");
    }
  }
  // Columns: species:S:1:pos:R:3[:spin:R:3 ...]; without Properties, species and pos.
  int species_col = 0, pos_col = 1, spin_col = -1, ncols = 4;
  if (auto it = comment.find("properties"); it != comment.end()) {
    std::vector<std::string> p = absl::StrSplit(it->second, ':');
    if (p.size() % 3 != 0) return LineError(2, "Properties must be name:type:count triples");
    species_col = pos_col = -1;
    int col = 0;
    for (size_t k = 0; k < p.size(); k += 3) {
      int count = 0;
      if (!absl::SimpleAtoi(p[k + 2], &count) || count < 1) return LineError(2, "bad Properties count");
      if (p[k] == "species") species_col = col;
      if (p[k] == "pos") pos_col = col;
      if (p[k] == "spin") spin_col = col;
      col += count;
    }
    ncols = col;
    if (species_col < 0 || pos_col < 0) return LineError(2, "Properties needs species and pos");
  }
  const std::string fix_count = absl::StrCat("line 1 announces ", natoms, " atoms: give that many atom lines, or ",
                                             "correct the count on line 1");
  for (int i = 0; i < natoms; ++i) {
    if (!std::getline(in, line)) {
      return LineError(3 + i, absl::StrCat("the file ends after ", i, " atom lines; ", fix_count));
    }
    std::vector<std::string> cols = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (static_cast<int>(cols.size()) < ncols) {
      return LineError(3 + i, absl::StrCat("expected ", ncols, " columns (atom ", i + 1, "), got ", cols.size(),
                                           "; if the frame has only ", i, " atoms, ", fix_count));
    }
    frame.species.push_back(cols[species_col]);
    for (int d = 0; d < 3; ++d) {
      double x;
      if (!absl::SimpleAtod(cols[pos_col + d], &x))
        return LineError(3 + i, absl::StrCat("bad coordinate '", cols[pos_col + d], "'"));
      frame.coord.push_back(x);
    }
    for (int d = 0; spin_col >= 0 && d < 3; ++d) {
      double s;
      if (!absl::SimpleAtod(cols[spin_col + d], &s)) return LineError(3 + i, "bad spin value");
      frame.spin.push_back(s);
    }
  }
  // Anything after the frame is a second frame or atom lines beyond the count: never silently dropped.
  for (int number = 3 + natoms; std::getline(in, line); ++number) {
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    return LineError(number, absl::StrCat("there is more after the ", natoms,
                                          " atoms of the first frame (a second frame, or more atom lines than line 1 "
                                          "announces); this reads one frame per file: split the file into one file "
                                          "per frame, or correct the count on line 1"));
  }
  return frame;
}

}  // namespace deepmd::tools
