#include "deepmd/tools/npy.h"

#include <cstring>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace deepmd::tools {
namespace {

absl::Status Bad(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": not a readable .npy file: ", what));
}

// The value of 'key' in the header's Python dict literal, e.g. "'<f4'" or "(80, 576)".
std::string Field(const std::string& header, const std::string& key) {
  const size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) return "";
  size_t start = header.find(':', at);
  if (start == std::string::npos) return "";
  ++start;
  while (start < header.size() && header[start] == ' ') ++start;
  size_t end = start;
  if (header[start] == '(') {
    end = header.find(')', start);
    return end == std::string::npos ? "" : header.substr(start, end - start + 1);
  }
  end = header.find_first_of(",}", start);
  return header.substr(start, end - start);
}

}  // namespace

absl::StatusOr<NpyArray> ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) return Bad(path, "no NumPy magic");
  const int major = static_cast<unsigned char>(magic[6]);
  uint32_t header_len = 0;
  if (major == 1) {
    unsigned char b[2];
    if (!in.read(reinterpret_cast<char*>(b), 2)) return Bad(path, "truncated header");
    header_len = b[0] | (b[1] << 8);
  } else if (major == 2 || major == 3) {
    unsigned char b[4];
    if (!in.read(reinterpret_cast<char*>(b), 4)) return Bad(path, "truncated header");
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  } else {
    return Bad(path, absl::StrCat("format version ", major, " is unknown"));
  }
  if (header_len > (1u << 20)) return Bad(path, "header too long");
  std::string header(header_len, '\0');
  if (!in.read(header.data(), header_len)) return Bad(path, "truncated header");
  const std::string descr = std::string(absl::StripSuffix(absl::StripPrefix(Field(header, "descr"), "'"), "'"));
  if (Field(header, "fortran_order").find("False") == std::string::npos) {
    return Bad(path, "Fortran-ordered arrays are not supported");
  }
  NpyArray out;
  std::string shape = Field(header, "shape");
  shape = std::string(absl::StripSuffix(absl::StripPrefix(shape, "("), ")"));
  int64_t count = 1;
  for (absl::string_view part : absl::StrSplit(shape, ',', absl::SkipWhitespace())) {
    int64_t d = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &d) || d < 0) return Bad(path, "bad shape " + shape);
    if (d > 0 && count > (int64_t{1} << 40) / d) return Bad(path, "shape too large");
    out.shape.push_back(d);
    count *= d;
  }
  int width = 0;
  if (descr == "<f4" || descr == "<i4") width = 4;
  if (descr == "<f8" || descr == "<i8") width = 8;
  if (width == 0) return Bad(path, absl::StrCat("dtype '", descr, "' is not little-endian float32/64 or int32/64"));
  std::vector<char> raw(static_cast<size_t>(count) * width);
  if (!in.read(raw.data(), static_cast<std::streamsize>(raw.size()))) {
    return Bad(path, absl::StrCat("truncated data (", count, " values of ", width, " bytes expected)"));
  }
  out.values.resize(count);
  for (int64_t i = 0; i < count; ++i) {
    const char* p = raw.data() + i * width;
    if (descr == "<f4") {
      float v;
      std::memcpy(&v, p, 4);
      out.values[i] = v;
    } else if (descr == "<f8") {
      std::memcpy(&out.values[i], p, 8);
    } else if (descr == "<i4") {
      int32_t v;
      std::memcpy(&v, p, 4);
      out.values[i] = v;
    } else {
      int64_t v;
      std::memcpy(&v, p, 8);
      out.values[i] = static_cast<double>(v);
    }
  }
  return out;
}

}  // namespace deepmd::tools
