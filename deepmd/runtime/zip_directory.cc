#include "deepmd/runtime/zip_directory.h"

#include <zlib.h>

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace deepmd::runtime {
namespace {

constexpr uint32_t kLocalHeader = 0x04034b50, kCentralHeader = 0x02014b50, kEnd = 0x06054b50;
constexpr uint32_t kEnd64 = 0x06064b50, kEnd64Locator = 0x07064b50;

// Little-endian reads that fail instead of reading past the end.
class Reader {
 public:
  explicit Reader(absl::string_view bytes) : bytes_(bytes) {}
  bool Has(uint64_t at, uint64_t n) const { return at <= bytes_.size() && n <= bytes_.size() - at; }
  uint64_t Get(uint64_t at, int n) const {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = v << 8 | static_cast<unsigned char>(bytes_[at + i]);
    return v;
  }

 private:
  absl::string_view bytes_;
};

absl::Status Corrupt(absl::string_view why) { return absl::DataLossError(why); }

// Sizes and offset from an entry's ZIP64 extra field, for those the fixed fields mark 0xFFFFFFFF.
absl::Status ApplyZip64(const Reader& r, uint64_t extra, uint64_t extra_len, ZipEntry& e, uint64_t& offset) {
  for (uint64_t at = extra; at + 4 <= extra + extra_len;) {
    const uint64_t id = r.Get(at, 2), len = r.Get(at + 2, 2);
    if (at + 4 + len > extra + extra_len) break;
    if (id == 1) {
      uint64_t p = at + 4;
      for (uint64_t* field : {&e.size, &e.compressed_size, &offset}) {
        if (*field != 0xFFFFFFFF) continue;
        if (p + 8 > at + 4 + len) return Corrupt(absl::StrCat("entry ", e.name, ": short ZIP64 extra field"));
        *field = r.Get(p, 8);
        p += 8;
      }
      return absl::OkStatus();
    }
    at += 4 + len;
  }
  if (e.size == 0xFFFFFFFF || e.compressed_size == 0xFFFFFFFF || offset == 0xFFFFFFFF) {
    return Corrupt(absl::StrCat("entry ", e.name, ": no ZIP64 extra field for its sizes"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<ZipEntry>> ReadZipDirectory(absl::string_view zip) {
  const Reader r(zip);
  // The end record: the last signature whose comment reaches exactly the end of the file.
  uint64_t end = UINT64_MAX;
  for (uint64_t at = zip.size() >= 22 ? zip.size() - 22 : UINT64_MAX, n = 0; at != UINT64_MAX && n <= 65535;
       --at, ++n) {
    if (r.Get(at, 4) == kEnd && at + 22 + r.Get(at + 20, 2) == zip.size()) {
      end = at;
      break;
    }
    if (at == 0) break;
  }
  if (end == UINT64_MAX) return Corrupt("no end-of-central-directory record");
  uint64_t count = r.Get(end + 10, 2), dir_size = r.Get(end + 12, 4), dir = r.Get(end + 16, 4);
  uint64_t dir_end = end;
  // A ZIP64 end record (PyTorch's writer always adds one) precedes the end record with its locator.
  if (end >= 20 && r.Get(end - 20, 4) == kEnd64Locator) {
    const uint64_t end64 = r.Get(end - 20 + 8, 8);
    if (end64 > end - 20 || !r.Has(end64, 56) || r.Get(end64, 4) != kEnd64) return Corrupt("bad ZIP64 end record");
    count = r.Get(end64 + 32, 8);
    dir_size = r.Get(end64 + 40, 8);
    dir = r.Get(end64 + 48, 8);
    dir_end = end64;
  } else if (count == 0xFFFF || dir_size == 0xFFFFFFFF || dir == 0xFFFFFFFF) {
    return Corrupt("no ZIP64 end-record locator");
  }
  if (dir > dir_end || dir_size != dir_end - dir) {
    return Corrupt(
        absl::StrFormat("the central directory (%d bytes at %d) does not end where its end record is", dir_size, dir));
  }
  if (count > dir_size / 46) return Corrupt(absl::StrCat(count, " entries cannot fit a ", dir_size, "-byte directory"));
  std::vector<ZipEntry> entries;
  std::set<std::string> names;
  uint64_t at = dir;
  for (uint64_t k = 0; k < count; ++k) {
    if (!r.Has(at, 46) || at + 46 > dir_end || r.Get(at, 4) != kCentralHeader) {
      return Corrupt(absl::StrCat("central-directory record ", k, " is malformed"));
    }
    const uint64_t flags = r.Get(at + 8, 2), name_len = r.Get(at + 28, 2), extra_len = r.Get(at + 30, 2),
                   comment_len = r.Get(at + 32, 2);
    if (at + 46 + name_len + extra_len + comment_len > dir_end) {
      return Corrupt(absl::StrCat("central-directory record ", k, " runs past the directory"));
    }
    ZipEntry e;
    e.name = std::string(zip.substr(at + 46, name_len));
    e.method = static_cast<uint16_t>(r.Get(at + 10, 2));
    e.crc32 = static_cast<uint32_t>(r.Get(at + 16, 4));
    e.compressed_size = r.Get(at + 20, 4);
    e.size = r.Get(at + 24, 4);
    uint64_t local = r.Get(at + 42, 4);
    if (absl::Status s = ApplyZip64(r, at + 46 + name_len, extra_len, e, local); !s.ok()) return s;
    if (flags & 1) return Corrupt(absl::StrCat("entry ", e.name, " is encrypted"));
    if (!names.insert(e.name).second) return Corrupt(absl::StrCat("entry ", e.name, " appears twice"));
    if (!r.Has(local, 30) || r.Get(local, 4) != kLocalHeader) {
      return Corrupt(absl::StrCat("entry ", e.name, " has no local header where the directory says"));
    }
    const uint64_t local_name = r.Get(local + 26, 2), local_extra = r.Get(local + 28, 2);
    if (!r.Has(local + 30, local_name) || zip.substr(local + 30, local_name) != e.name) {
      return Corrupt(absl::StrCat("entry ", e.name, " is named differently in its local header"));
    }
    e.data_offset = local + 30 + local_name + local_extra;
    if (e.data_offset > dir || e.compressed_size > dir - e.data_offset) {
      return Corrupt(absl::StrCat("entry ", e.name, "'s data runs past the central directory"));
    }
    entries.push_back(std::move(e));
    at += 46 + name_len + extra_len + comment_len;
  }
  return entries;
}

absl::string_view StoredData(absl::string_view zip, const ZipEntry& e) {
  return zip.substr(e.data_offset, e.compressed_size);
}

absl::Status CheckZipCrc(absl::string_view zip, const ZipEntry& e) {
  const absl::string_view data = StoredData(zip, e);
  uint64_t size = 0;
  uLong crc = crc32(0L, Z_NULL, 0);
  if (e.method == 0) {
    size = data.size();
    // zlib's crc32 takes a uInt length: in pieces for entries over 4 GB.
    for (size_t at = 0; at < data.size(); at += 1u << 30) {
      const size_t n = std::min<size_t>(1u << 30, data.size() - at);
      crc = crc32(crc, reinterpret_cast<const Bytef*>(data.data() + at), static_cast<uInt>(n));
    }
  } else if (e.method == 8) {
    // Inflated through a fixed buffer: a forged size cannot make it allocate.
    z_stream z{};
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK) return absl::InternalError("zlib: inflateInit2 failed");
    unsigned char buffer[1 << 16];
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    z.avail_in = static_cast<uInt>(std::min<size_t>(data.size(), UINT32_MAX));
    int status = Z_OK;
    while (status == Z_OK && size <= e.size) {
      z.next_out = buffer;
      z.avail_out = sizeof(buffer);
      status = inflate(&z, Z_NO_FLUSH);
      const size_t produced = sizeof(buffer) - z.avail_out;
      crc = crc32(crc, buffer, static_cast<uInt>(produced));
      size += produced;
      if (status == Z_BUF_ERROR && z.avail_in == 0) break;
    }
    inflateEnd(&z);
    if (status != Z_STREAM_END) return Corrupt(absl::StrCat("entry ", e.name, "'s compressed data is malformed"));
  } else {
    return Corrupt(
        absl::StrCat("entry ", e.name, " uses compression method ", e.method, ", which model archives never use"));
  }
  if (size != e.size) {
    return Corrupt(absl::StrCat("entry ", e.name, " has ", size, " bytes; its directory record says ", e.size));
  }
  if (crc != e.crc32) {
    return Corrupt(absl::StrFormat("entry %s fails its CRC-32 check (computed %08x, recorded %08x)", e.name,
                                   static_cast<uint32_t>(crc), e.crc32));
  }
  return absl::OkStatus();
}

}  // namespace deepmd::runtime
