#include "tests/support/zip_writer.h"

#include <zlib.h>

#include <cstdint>

namespace deepmd::testing {
namespace {

void Put(std::string& out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}

std::string Deflate(const std::string& data) {
  z_stream z{};
  deflateInit2(&z, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, data.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

}  // namespace

std::string WriteZip(const std::vector<std::pair<std::string, std::string>>& entries, bool deflate) {
  std::string out, dir;
  for (const auto& [name, data] : entries) {
    const std::string stored = deflate ? Deflate(data) : data;
    const uint32_t crc = crc32(0, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size()));
    const uint64_t offset = out.size();
    const int method = deflate ? 8 : 0;
    // Local header: signature, version, flags, method, time+date, CRC, sizes, name length, extra length.
    Put(out, 0x04034b50, 4), Put(out, 20, 2), Put(out, 0, 2), Put(out, method, 2), Put(out, 0, 4);
    Put(out, crc, 4), Put(out, stored.size(), 4), Put(out, data.size(), 4), Put(out, name.size(), 2), Put(out, 0, 2);
    out += name + stored;
    // Central record: also version made by, comment length, disk, attributes and the local header's offset.
    Put(dir, 0x02014b50, 4), Put(dir, 20, 2), Put(dir, 20, 2), Put(dir, 0, 2), Put(dir, method, 2), Put(dir, 0, 4);
    Put(dir, crc, 4), Put(dir, stored.size(), 4), Put(dir, data.size(), 4), Put(dir, name.size(), 2), Put(dir, 0, 2);
    Put(dir, 0, 2), Put(dir, 0, 2), Put(dir, 0, 2), Put(dir, 0, 4), Put(dir, offset, 4);
    dir += name;
  }
  const uint64_t at = out.size();
  out += dir;
  Put(out, 0x06054b50, 4), Put(out, 0, 4), Put(out, entries.size(), 2), Put(out, entries.size(), 2);
  Put(out, dir.size(), 4), Put(out, at, 4), Put(out, 0, 2);
  return out;
}

}  // namespace deepmd::testing
