// Memory that the other processes of this host can map: the exchange's single-copy path. On one host
// every byte MPI moves is copied by a core (and CMA pins pages first); when a rank's result lives in
// such memory, its peers write the rows it receives straight into it, which is the only copy an
// exchange of scattered rows must make. Everything here degrades to "not shared" (the MPI path) when
// the host does not allow it: no memfd, /proc of peers not readable, another pid namespace or host.
#ifndef DEEPMD_OPS_SHARED_MEMORY_H_
#define DEEPMD_OPS_SHARED_MEMORY_H_

#include <cstdint>

namespace deepmd::ops {

// Where a region of shared memory lives, as a peer needs it to map the region (it travels in a message
// as bytes). offset < 0: the region is not shared.
struct SharedRegion {
  uint64_t host = 0;   // kernel boot and pid namespace: a pid names the same process only when equal
  uint64_t inode = 0;  // the segment file's inode, checked after the peer opens it
  int64_t offset = -1;
  int64_t bytes = 0;
  int32_t pid = 0, fd = -1;  // the owner process and its descriptor of the segment file
  bool shared() const { return offset >= 0; }
};

// The process's arena of shared segments (thread-safe; never destroyed, so tensors freed at exit are
// safe). Off when DEEPMD_EXCHANGE_SHARED_MEMORY=0 or when the host cannot make such memory.
class SharedArena {
 public:
  static SharedArena& Get();
  bool enabled() const { return enabled_; }
  // 64-byte aligned, or nullptr when disabled or out of memory (callers then allocate normally).
  void* Allocate(int64_t bytes);
  void Free(void* p);
  // The region [p, p + bytes) as peers can map it; not shared unless it lies inside one allocation.
  SharedRegion Locate(const void* p, int64_t bytes) const;

 private:
  SharedArena();
  struct State;
  State* state_;
  bool enabled_;
};

// This process's view of a peer's region, mapped on first use and cached; nullptr when it cannot be
// mapped (not shared, another host or pid namespace, permissions, a descriptor that is not the
// segment announced). Thread-safe.
void* MapPeerRegion(const SharedRegion& region);

// Whether a peer could map this process's regions, and this process a peer's: the arena is on and a
// region of it maps back through /proc (the tests' check that the single-copy path is exercised).
bool SharedMemoryWorks();

}  // namespace deepmd::ops

#endif  // DEEPMD_OPS_SHARED_MEMORY_H_
