#include "deepmd/runtime/process_policy.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "deepmd/runtime/host_memory.h"

namespace deepmd::runtime {
namespace {

std::atomic<bool> g_by_host{false};
std::atomic<bool> g_keeps_freed_memory{false};
std::atomic<bool> g_flushes_denormals{false};

// OpenBLAS's thread controls, looked up in the copy LibTorch already loaded (RTLD_NOLOAD: never load
// one; a plugin loaded RTLD_LOCAL cannot see it through RTLD_DEFAULT).
struct OpenBlas {
  void (*set_num_threads)(int) = nullptr;
  int (*get_num_threads)() = nullptr;
};

const OpenBlas& FindOpenBlas() {
  static const OpenBlas found = [] {
    OpenBlas blas;
    void* library = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_NOLOAD);
    if (library == nullptr) return blas;
    blas.set_num_threads = reinterpret_cast<void (*)(int)>(dlsym(library, "openblas_set_num_threads"));
    blas.get_num_threads = reinterpret_cast<int (*)()>(dlsym(library, "openblas_get_num_threads"));
    return blas;  // the handle stays open: LibTorch keeps the library loaded anyway
  }();
  return found;
}

}  // namespace

absl::StatusOr<ProcessPolicy> PolicyFromEnvironment(bool multi_rank, std::string* warning) {
  ProcessPolicy policy;
  const char* malloc_env = std::getenv("DEEPMD_MALLOC");
  policy.keep_freed_memory = malloc_env == nullptr || std::strcmp(malloc_env, "system") != 0;
  const char* denormals = std::getenv("DEEPMD_DENORMALS");
  if (denormals != nullptr && *denormals != '\0' && std::strcmp(denormals, "ieee") != 0) {
    return absl::InvalidArgumentError(absl::StrCat("DEEPMD_DENORMALS='", denormals,
                                                   "' is not understood: set it to 'ieee' (keep denormal floats) "
                                                   "or unset it (flush them to zero)"));
  }
  policy.flush_denormals = denormals == nullptr || *denormals == '\0';
  const char* env = std::getenv("DEEPMD_NUM_THREADS");
  if (env == nullptr || *env == '\0') {
    policy.threads = multi_rank ? 1 : 0;
  } else {
    if (!absl::SimpleAtoi(env, &policy.threads) || policy.threads < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("DEEPMD_NUM_THREADS='", env,
                       "' is not a positive integer: set it to the number of threads per rank (e.g. 1), or unset it"));
    }
    const int hardware = static_cast<int>(std::thread::hardware_concurrency());  // 0: unknown
    if (hardware > 0 && policy.threads > hardware) {
      if (warning != nullptr) {
        *warning = absl::StrCat("DEEPMD_NUM_THREADS=", policy.threads, " is more than the ", hardware,
                                " hardware threads of this machine; using ", hardware);
      }
      policy.threads = hardware;
    }
  }
  policy.blas_threads = policy.threads > 0 ? policy.threads : at::get_num_threads();
  return policy;
}

void ApplyProcessPolicy(const ProcessPolicy& policy, bool by_host) {
  if (policy.keep_freed_memory) {
    KeepFreedMemory();
    g_keeps_freed_memory = true;
  }
  // setFlushDenormal is false where the CPU has no FTZ/DAZ; the log then says denormals are kept.
  g_flushes_denormals = at::globalContext().setFlushDenormal(policy.flush_denormals) && policy.flush_denormals;
  if (policy.threads > 0) at::set_num_threads(policy.threads);
  const OpenBlas& blas = FindOpenBlas();
  if (policy.blas_threads > 0 && blas.set_num_threads != nullptr) blas.set_num_threads(policy.blas_threads);
  if (by_host) g_by_host = true;
}

bool HostChoseProcessPolicy() { return g_by_host; }

int BlasThreads() {
  const OpenBlas& blas = FindOpenBlas();
  return blas.get_num_threads != nullptr ? blas.get_num_threads() : 0;
}

std::string DescribeProcessPolicy() {
  const int blas = BlasThreads();
  return absl::StrCat(
      g_keeps_freed_memory ? "malloc keeps freed memory (DEEPMD_MALLOC=system: glibc's defaults)"
                           : "glibc's malloc defaults",
      g_flushes_denormals ? ", denormals flushed to zero (DEEPMD_DENORMALS=ieee: kept)" : ", IEEE denormals", ", ",
      at::get_num_threads(), " LibTorch thread(s), ",
      blas > 0 ? absl::StrCat(blas, " OpenBLAS thread(s)") : std::string("no OpenBLAS"), " per rank");
}

}  // namespace deepmd::runtime
