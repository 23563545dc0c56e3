#include "deepmd/ops/shared_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

namespace deepmd::ops {
namespace {

constexpr int64_t kAlignment = 64;
constexpr int64_t kMinSegmentBytes = int64_t{32} << 20;  // grows by doubling: few segments, few peer maps

int64_t RoundUp(int64_t n, int64_t to) { return (n + to - 1) / to * to; }

// The kernel's boot id and this process's pid namespace: equal on two processes exactly when a pid
// means the same process to both. 0 when either cannot be read (then nothing is shared).
uint64_t HostIdentity() {
  std::ifstream boot("/proc/sys/kernel/random/boot_id");
  std::string boot_id;
  struct stat ns;
  if (!std::getline(boot, boot_id) || boot_id.empty() || stat("/proc/self/ns/pid", &ns) != 0) return 0;
  const uint64_t h =
      std::hash<std::string>()(boot_id + "/" + std::to_string(ns.st_dev) + ":" + std::to_string(ns.st_ino));
  return h == 0 ? 1 : h;
}

struct Segment {
  int fd = -1;
  uint64_t inode = 0;
  char* base = nullptr;
  int64_t bytes = 0;
  std::map<int64_t, int64_t> free_blocks;  // offset -> bytes, coalesced
  std::map<int64_t, int64_t> used_blocks;  // offset -> bytes
  bool contains(const void* p) const {
    const char* c = static_cast<const char*>(p);
    return c >= base && c < base + bytes;
  }
};

bool NewSegment(int64_t bytes, Segment& s) {
  const int fd = memfd_create("deepmd-exchange", MFD_CLOEXEC);
  if (fd < 0) return false;
  struct stat st;
  void* base = MAP_FAILED;
  if (ftruncate(fd, bytes) == 0 && fstat(fd, &st) == 0) {
    base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  if (base == MAP_FAILED) {
    close(fd);
    return false;
  }
  s.fd = fd;
  s.inode = st.st_ino;
  s.base = static_cast<char*>(base);
  s.bytes = bytes;
  s.free_blocks[0] = bytes;
  return true;
}

void* TakeFirstFit(Segment& s, int64_t bytes) {
  for (auto it = s.free_blocks.begin(); it != s.free_blocks.end(); ++it) {
    if (it->second < bytes) continue;
    const int64_t offset = it->first, left = it->second - bytes;
    s.free_blocks.erase(it);
    if (left > 0) s.free_blocks[offset + bytes] = left;
    s.used_blocks[offset] = bytes;
    return s.base + offset;
  }
  return nullptr;
}

void GiveBack(Segment& s, int64_t offset) {
  auto used = s.used_blocks.find(offset);
  if (used == s.used_blocks.end()) return;
  int64_t start = offset, bytes = used->second;
  s.used_blocks.erase(used);
  auto next = s.free_blocks.lower_bound(start);
  if (next != s.free_blocks.end() && next->first == start + bytes) {
    bytes += next->second;
    next = s.free_blocks.erase(next);
  }
  if (next != s.free_blocks.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      start = prev->first;
      bytes += prev->second;
      s.free_blocks.erase(prev);
    }
  }
  s.free_blocks[start] = bytes;
}

}  // namespace

struct SharedArena::State {
  mutable std::mutex mutex;
  uint64_t host = 0;
  std::vector<Segment> segments;
};

SharedArena& SharedArena::Get() {
  static SharedArena* arena = new SharedArena();  // leaked: tensors may be freed during static destruction
  return *arena;
}

SharedArena::SharedArena() : state_(new State()) {
  const char* env = std::getenv("DEEPMD_EXCHANGE_SHARED_MEMORY");
  state_->host = HostIdentity();
  enabled_ = !(env && std::string(env) == "0") && state_->host != 0;
}

void* SharedArena::Allocate(int64_t bytes) {
  if (!enabled_ || bytes <= 0) return nullptr;
  bytes = RoundUp(bytes, kAlignment);
  std::lock_guard<std::mutex> lock(state_->mutex);
  for (Segment& s : state_->segments) {
    if (void* p = TakeFirstFit(s, bytes)) return p;
  }
  const int64_t last = state_->segments.empty() ? 0 : state_->segments.back().bytes;
  Segment s;
  if (!NewSegment(std::max({kMinSegmentBytes, 2 * last, RoundUp(bytes, int64_t{2} << 20)}), s)) return nullptr;
  state_->segments.push_back(s);
  return TakeFirstFit(state_->segments.back(), bytes);
}

void SharedArena::Free(void* p) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  for (Segment& s : state_->segments) {
    if (s.contains(p)) return GiveBack(s, static_cast<char*>(p) - s.base);
  }
}

SharedRegion SharedArena::Locate(const void* p, int64_t bytes) const {
  SharedRegion region;
  if (!enabled_) return region;
  std::lock_guard<std::mutex> lock(state_->mutex);
  for (const Segment& s : state_->segments) {
    if (!s.contains(p)) continue;
    const int64_t offset = static_cast<const char*>(p) - s.base;
    auto block = s.used_blocks.upper_bound(offset);
    if (block == s.used_blocks.begin()) return region;
    --block;
    if (offset + bytes > block->first + block->second) return region;
    region.host = state_->host;
    region.inode = s.inode;
    region.offset = offset;
    region.bytes = bytes;
    region.pid = getpid();
    region.fd = s.fd;
    return region;
  }
  return region;
}

void* MapPeerRegion(const SharedRegion& region) {
  static std::mutex mutex;
  // (pid, fd, inode) -> the segment mapped here (nullptr: it could not be; not retried)
  static auto* mapped = new std::map<std::tuple<int32_t, int32_t, uint64_t>, std::pair<char*, int64_t>>();
  static const uint64_t host = HostIdentity();
  if (!region.shared() || host == 0 || region.host != host || region.bytes < 0) return nullptr;
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_tuple(region.pid, region.fd, region.inode);
  auto it = mapped->find(key);
  if (it == mapped->end()) {
    std::pair<char*, int64_t> segment{nullptr, 0};
    const std::string path = "/proc/" + std::to_string(region.pid) + "/fd/" + std::to_string(region.fd);
    const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0 && st.st_ino == region.inode && st.st_size > 0) {
      void* base = mmap(nullptr, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (base != MAP_FAILED) segment = {static_cast<char*>(base), st.st_size};
    }
    if (fd >= 0) close(fd);
    it = mapped->emplace(key, segment).first;
  }
  const auto [base, bytes] = it->second;
  if (base == nullptr || region.offset + region.bytes > bytes) return nullptr;
  return base + region.offset;
}

bool SharedMemoryWorks() {
  static const bool works = [] {
    SharedArena& arena = SharedArena::Get();
    auto* mine = static_cast<volatile int64_t*>(arena.Allocate(sizeof(int64_t)));
    if (mine == nullptr) return false;
    auto* peer_view = static_cast<volatile int64_t*>(MapPeerRegion(arena.Locate((void*)mine, sizeof(int64_t))));
    bool ok = false;
    if (peer_view != nullptr) {
      *peer_view = 0x5eed;
      ok = *mine == 0x5eed;
    }
    arena.Free((void*)mine);
    return ok;
  }();
  return works;
}

}  // namespace deepmd::ops
