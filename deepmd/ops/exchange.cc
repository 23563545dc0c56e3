#include "deepmd/ops/exchange.h"

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "deepmd/ops/shared_memory.h"

namespace deepmd::ops {
namespace {

// Tags of our messages: far from LAMMPS's (0) and distinct per stage, so a message can never be
// matched by another stage's receive even when peers run ahead. Rows and the offers of shared memory
// that precede them have separate ranges, both below MPI's guaranteed tag bound (32767).
constexpr int kTagBase = 7100;
constexpr int kTagRange = 10000;
int StageTag(int32_t stage) { return kTagBase + stage % kTagRange; }
int OfferTag(int32_t stage) { return kTagBase + kTagRange + stage % kTagRange; }

template <typename T>
MPI_Datatype MpiType();
template <>
MPI_Datatype MpiType<float>() {
  return MPI_FLOAT;
}
template <>
MPI_Datatype MpiType<double>() {
  return MPI_DOUBLE;
}

// Adds the lifetime of the enclosing call to one of the totals.
class TotalTimer {
 public:
  TotalTimer(double& seconds, int64_t& calls) : seconds_(seconds), start_(std::chrono::steady_clock::now()) { ++calls; }
  ~TotalTimer() { seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

 private:
  double& seconds_;
  std::chrono::steady_clock::time_point start_;
};

// Per-thread buffers reused across calls: no allocation per exchange once they have grown. The rows
// buffer is in shared memory when the host allows it: the reverse's peers write into it.
struct Scratch {
  void* rows = nullptr;
  int64_t rows_bytes = 0;
  std::vector<unsigned char> fallback;  // the rows buffer when shared memory is off
  std::vector<MPI_Request> requests;
  std::vector<int32_t> request_message;  // message index of each request (receives) or -1
  std::vector<char> offered;             // per request: the receive offered shared memory (rows may come written)
  std::vector<MPI_Request> offer_requests;
  std::vector<SharedRegion> offers_out, offers_in;
  template <typename T>
  T* Rows(int64_t n, int64_t width) {
    const int64_t need = n * width * static_cast<int64_t>(sizeof(T));
    const bool fits = rows ? rows_bytes >= need : static_cast<int64_t>(fallback.size()) >= need;
    if (!fits) {
      SharedArena::Get().Free(rows);
      rows = SharedArena::Get().Allocate(need);
      rows_bytes = rows ? need : 0;
      if (rows == nullptr) fallback.resize(need);
    }
    return static_cast<T*>(rows ? rows : static_cast<void*>(fallback.data()));
  }
  ~Scratch() { SharedArena::Get().Free(rows); }
  void Clear(int32_t messages) {
    requests.clear();
    request_message.clear();
    offered.clear();
    offer_requests.clear();
    offers_out.assign(messages, SharedRegion());  // sized before posting: MPI holds pointers into them
    offers_in.assign(messages, SharedRegion());
  }
  void Add(MPI_Request r, int32_t message, bool offer) {
    requests.push_back(r);
    request_message.push_back(message);
    offered.push_back(offer);
  }
};
thread_local Scratch scratch;

// The communicator named by the plan, checked against this process.
absl::StatusOr<MPI_Comm> Communicator(const PlanView& plan) {
  if (!plan.uses_mpi()) return MPI_COMM_NULL;
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) {
    return absl::FailedPreconditionError(
        "the ghost-exchange plan names an MPI communicator but MPI is not initialized (or already "
        "finalized); build single-process plans with the 'no communicator' sentinel");
  }
  MPI_Comm comm = MPI_Comm_f2c(plan.communicator());
  int rank = -1, size = 0;
  if (comm == MPI_COMM_NULL || MPI_Comm_rank(comm, &rank) != MPI_SUCCESS || MPI_Comm_size(comm, &size) != MPI_SUCCESS) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ghost-exchange plan's communicator handle ", plan.communicator(), " is not valid"));
  }
  if (rank != plan.rank() || size != plan.size()) {
    return absl::InvalidArgumentError(absl::StrCat("the ghost-exchange plan was built for rank ", plan.rank(), " of ",
                                                   plan.size(), ", but this process is rank ", rank, " of ", size,
                                                   " on the plan's communicator"));
  }
  return comm;
}

absl::Status CheckCounts(const PlanView& plan, int64_t width) {
  if (width < 0) return absl::InvalidArgumentError(absl::StrCat("feature width is ", width));
  const int64_t rows = std::max<int64_t>(plan.nrows(), 1);
  if (width > 0 && rows > std::numeric_limits<int>::max() / width) {
    return absl::InvalidArgumentError(
        absl::StrCat("a message of ", plan.nrows(), " rows x ", width, " features exceeds MPI's int element count"));
  }
  return absl::OkStatus();
}

// Checks that each completed receive got exactly the rows the plan expects (a mismatch means the
// peers' plans disagree).
template <typename T>
absl::Status CheckReceived(const PlanView& plan, int32_t stage, std::vector<MPI_Status>& statuses, int64_t width,
                           bool reverse) {
  for (size_t r = 0; r < scratch.requests.size(); ++r) {
    const int32_t m = scratch.request_message[r];
    if (m < 0) continue;
    const Message msg = plan.message(m);
    int got = 0;
    MPI_Get_count(&statuses[r], MpiType<T>(), &got);
    const bool written_in_place = got == 0 && scratch.offered[r];  // the peer wrote into our shared memory
    if (int64_t{got} != int64_t{msg.count} * width && !written_in_place) {
      return absl::InternalError(absl::StrCat(
          reverse ? "reverse" : "forward", " ghost exchange, stage ", stage, ": rank ", plan.rank(), " expected ",
          msg.count, " rows from rank ", msg.peer, " but received ", width ? got / width : got,
          ": the ranks' plans disagree (were they built from the same decomposition?)"));
    }
  }
  return absl::OkStatus();
}

std::vector<MPI_Status>& Statuses(size_t n) {
  thread_local std::vector<MPI_Status> statuses;
  if (statuses.size() < n) statuses.resize(n);
  return statuses;
}

// The reverse's result, summed without copying the input first: a row of `out` holds its sum once
// something was added into it; until then its value is its row of `in`. The additions happen in the
// order of a copy followed by +=, so the sums are the same to the last bit.
template <typename T>
class LazySum {
 public:
  LazySum(const T* in, T* out, int64_t nrows, int64_t width) : in_(in), out_(out), width_(width) {
    touched().assign(static_cast<size_t>(nrows), 0);
  }
  const T* Row(int64_t r) const { return (touched()[r] ? out_ : in_) + r * width_; }
  void Add(int64_t r, const T* __restrict from) {
    T* __restrict to = out_ + r * width_;
    if (touched()[r]) {
      for (int64_t k = 0; k < width_; ++k) to[k] += from[k];
    } else {
      const T* __restrict value = in_ + r * width_;
      for (int64_t k = 0; k < width_; ++k) to[k] = value[k] + from[k];
      touched()[r] = 1;
    }
  }
  // Rows [first, first + count) where they lie contiguously already, or nullptr when some were added into.
  const T* Untouched(int64_t first, int64_t count) const {
    const auto begin = touched().begin() + first;
    return std::find(begin, begin + count, 1) == begin + count ? in_ + first * width_ : nullptr;
  }
  // Copies the values of rows [first, first + count) to `to`, a run of same-source rows at a time.
  void Copy(int64_t first, int64_t count, T* to) const {
    ForEachRun(first, first + count, [&](int64_t begin, int64_t end, bool touched) {
      std::memcpy(to + (begin - first) * width_, (touched ? out_ : in_) + begin * width_, RowsBytes(end - begin));
    });
  }
  // The rows nothing was added into take their input; rows from `nlocal` on (ghosts) are zeroed.
  void Finish(int64_t nlocal) {
    const int64_t nrows = static_cast<int64_t>(touched().size());
    ForEachRun(0, nlocal, [&](int64_t begin, int64_t end, bool touched) {
      if (!touched) std::memcpy(out_ + begin * width_, in_ + begin * width_, RowsBytes(end - begin));
    });
    if (nrows > nlocal) std::memset(out_ + nlocal * width_, 0, RowsBytes(nrows - nlocal));
  }

 private:
  static std::vector<uint8_t>& touched() {
    thread_local std::vector<uint8_t> flags;  // reused: no allocation per call once grown
    return flags;
  }
  size_t RowsBytes(int64_t rows) const { return static_cast<size_t>(rows * width_) * sizeof(T); }
  template <typename F>
  void ForEachRun(int64_t first, int64_t end, F f) const {
    for (int64_t begin = first; begin < end;) {
      const uint8_t t = touched()[begin];
      int64_t stop = begin + 1;
      while (stop < end && touched()[stop] == t) ++stop;
      f(begin, stop, t != 0);
      begin = stop;
    }
  }
  const T* in_;
  T* out_;
  int64_t width_;
};

// Calls f(send, recv) for the k-th self send and the k-th self receive of a stage.
template <typename F>
void ForEachSelfPair(const PlanView& plan, int32_t stage, F f) {
  const int32_t first = plan.stage_first_message(stage), end = first + plan.stage_num_messages(stage);
  int32_t recv = first;
  for (int32_t s = first; s < end; ++s) {
    const Message send = plan.message(s);
    if (send.kind != MessageKind::kSend || !plan.is_self(send)) continue;
    Message r;
    do {
      r = plan.message(recv++);
    } while (!(r.kind == MessageKind::kRecv && plan.is_self(r)));  // validated: it exists
    f(send, r);
  }
}

// The shared-memory handshake of one stage, the same in both directions. Every receive of rows is
// posted as an MPI receive; with it, the receiver offers the receive's destination to the sender
// (`PostReceive`). The sender (`Deliver`) writes the rows straight into an offer it can map and then sends
// an empty message, or sends the rows through MPI. So each receive completes either way, and a host
// that allows no sharing costs one small message per receive.
template <typename T>
void PostReceive(MPI_Comm comm, int32_t stage, int32_t message, int32_t peer, T* rows, int64_t count, int64_t width,
                 int32_t slot) {
  const int64_t bytes = count * width * static_cast<int64_t>(sizeof(T));
  SharedRegion& offer = scratch.offers_out[slot];
  offer = SharedArena::Get().Locate(rows, bytes);
  MPI_Request r;
  MPI_Irecv(rows, static_cast<int>(count * width), MpiType<T>(), peer, StageTag(stage), comm, &r);
  scratch.Add(r, message, offer.shared());
  MPI_Isend(&offer, sizeof(SharedRegion), MPI_BYTE, peer, OfferTag(stage), comm, &r);
  scratch.Add(r, -1, false);
}

void PostOfferReceive(MPI_Comm comm, int32_t stage, int32_t peer, int32_t slot) {
  scratch.offer_requests.emplace_back();
  MPI_Irecv(&scratch.offers_in[slot], sizeof(SharedRegion), MPI_BYTE, peer, OfferTag(stage), comm,
            &scratch.offer_requests.back());
}

void WaitForOffers() {
  if (scratch.offer_requests.empty()) return;
  MPI_Waitall(static_cast<int>(scratch.offer_requests.size()), scratch.offer_requests.data(), MPI_STATUSES_IGNORE);
}

// Sends `count` rows to `peer`: `fill(to)` writes them contiguously at `to`, either into the peer's
// offered memory or, when that cannot be mapped, into `pack`, then sent through MPI (or `ready` is
// sent when it already holds them contiguously).
template <typename T, typename Fill>
void Deliver(MPI_Comm comm, int32_t stage, int32_t peer, int64_t count, int64_t width, int32_t slot, T* pack,
             const T* ready, Fill fill) {
  const int64_t values = count * width;
  const SharedRegion& offer = scratch.offers_in[slot];
  T* to = offer.bytes == values * static_cast<int64_t>(sizeof(T)) ? static_cast<T*>(MapPeerRegion(offer)) : nullptr;
  MPI_Request r;
  if (to != nullptr) {
    fill(to);
    std::atomic_thread_fence(std::memory_order_release);  // the rows before the message that announces them
    MPI_Isend(to, 0, MpiType<T>(), peer, StageTag(stage), comm, &r);
    exchange_totals().shared_rows += count;
  } else {
    if (ready == nullptr) fill(pack);
    MPI_Isend(ready ? ready : pack, static_cast<int>(values), MpiType<T>(), peer, StageTag(stage), comm, &r);
    exchange_totals().mpi_rows += count;
  }
  scratch.Add(r, -1, false);
}

template <typename T>
absl::Status FinishStage(const PlanView& plan, int32_t stage, int64_t width, bool reverse) {
  if (scratch.requests.empty()) return absl::OkStatus();
  std::vector<MPI_Status>& statuses = Statuses(scratch.requests.size());
  MPI_Waitall(static_cast<int>(scratch.requests.size()), scratch.requests.data(), statuses.data());
  std::atomic_thread_fence(std::memory_order_acquire);  // rows peers wrote into our memory
  return CheckReceived<T>(plan, stage, statuses, width, reverse);
}

}  // namespace

template <typename T>
absl::Status ExchangeGhostsForward(const PlanView& plan, const T* in, T* out, int64_t width) {
  TotalTimer timer(exchange_totals().forward_seconds, exchange_totals().forward_calls);
  if (absl::Status s = CheckCounts(plan, width); !s.ok()) return s;
  absl::StatusOr<MPI_Comm> comm = Communicator(plan);
  if (!comm.ok()) return comm.status();
  const size_t row_bytes = static_cast<size_t>(width) * sizeof(T);
  if (plan.nlocal() > 0 && width > 0) std::memcpy(out, in, plan.nlocal() * row_bytes);

  for (int32_t stage = 0; stage < plan.num_stages(); ++stage) {
    const int32_t first = plan.stage_first_message(stage), end = first + plan.stage_num_messages(stage);
    scratch.Clear(end - first);
    // Receives land directly in their ghost rows (written there by the sender when it can map them).
    for (int32_t m = first; m < end; ++m) {
      const Message msg = plan.message(m);
      if (msg.kind != MessageKind::kRecv || plan.is_self(msg)) continue;
      PostReceive(*comm, stage, m, msg.peer, out + int64_t{msg.first_row} * width, msg.count, width, m - first);
    }
    for (int32_t m = first; m < end; ++m) {
      const Message msg = plan.message(m);
      if (msg.kind == MessageKind::kSend && !plan.is_self(msg)) PostOfferReceive(*comm, stage, msg.peer, m - first);
    }
    WaitForOffers();
    // Sends gather rows filled before this stage (so ghosts travel on: multi-hop).
    T* pack = scratch.Rows<T>(plan.max_remote_send_rows_in_stage(stage), width);
    for (int32_t m = first; m < end; ++m) {
      const Message msg = plan.message(m);
      if (msg.kind != MessageKind::kSend || plan.is_self(msg)) continue;
      Deliver(*comm, stage, msg.peer, msg.count, width, m - first, pack, static_cast<const T*>(nullptr), [&](T* to) {
        for (int32_t i = 0; i < msg.count; ++i) std::memcpy(to + i * width, out + msg.indices[i] * width, row_bytes);
      });
      pack += msg.count * width;
    }
    // Periodic images of this rank's own rows: local copies.
    ForEachSelfPair(plan, stage, [&](const Message& send, const Message& recv) {
      for (int32_t i = 0; i < send.count; ++i) {
        std::memcpy(out + (int64_t{recv.first_row} + i) * width, out + send.indices[i] * width, row_bytes);
      }
    });
    if (absl::Status s = FinishStage<T>(plan, stage, width, false); !s.ok()) return s;
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status ExchangeGhostsReverse(const PlanView& plan, const T* in, T* out, int64_t width) {
  TotalTimer timer(exchange_totals().reverse_seconds, exchange_totals().reverse_calls);
  if (absl::Status s = CheckCounts(plan, width); !s.ok()) return s;
  absl::StatusOr<MPI_Comm> comm = Communicator(plan);
  if (!comm.ok()) return comm.status();
  LazySum<T> sum(in, out, plan.nrows(), width);

  for (int32_t stage = plan.num_stages() - 1; stage >= 0; --stage) {
    const int32_t first = plan.stage_first_message(stage), end = first + plan.stage_num_messages(stage);
    scratch.Clear(end - first);
    int64_t returned_rows = 0;
    for (int32_t m = first; m < end; ++m) {
      const Message msg = plan.message(m);
      if (msg.kind == MessageKind::kRecv && !plan.is_self(msg)) returned_rows += msg.count;
    }
    // What was sent forward comes back into scratch (written there by the peer when it can map it), to
    // be added into the rows it was read from; ghost rows that go back through MPI are packed after it.
    const int64_t sent_rows = plan.max_remote_send_rows_in_stage(stage);
    T* unpack = scratch.Rows<T>(sent_rows + returned_rows, width);
    T* pack = unpack + sent_rows * width;
    T* next = unpack;
    for (int32_t m = first; m < end; ++m) {
      const Message msg = plan.message(m);
      if (msg.kind != MessageKind::kSend || plan.is_self(msg)) continue;
      PostReceive(*comm, stage, m, msg.peer, next, msg.count, width, m - first);
      next += msg.count * width;
    }
    for (int32_t m = first; m < end; ++m) {
      const Message msg = plan.message(m);
      if (msg.kind == MessageKind::kRecv && !plan.is_self(msg)) PostOfferReceive(*comm, stage, msg.peer, m - first);
    }
    WaitForOffers();
    // What was received forward goes back from its ghost rows (through MPI straight from the input
    // while no later stage has added into them).
    for (int32_t m = first; m < end; ++m) {
      const Message msg = plan.message(m);
      if (msg.kind != MessageKind::kRecv || plan.is_self(msg)) continue;
      Deliver(*comm, stage, msg.peer, msg.count, width, m - first, pack, sum.Untouched(msg.first_row, msg.count),
              [&](T* to) { sum.Copy(msg.first_row, msg.count, to); });
      pack += msg.count * width;
    }
    // Self pairs: the stage's ghost rows are disjoint from the rows they were copied from.
    ForEachSelfPair(plan, stage, [&](const Message& send, const Message& recv) {
      for (int32_t i = 0; i < send.count; ++i) sum.Add(send.indices[i], sum.Row(int64_t{recv.first_row} + i));
    });
    if (absl::Status s = FinishStage<T>(plan, stage, width, true); !s.ok()) return s;
    next = unpack;
    for (int32_t m = first; m < end; ++m) {
      const Message msg = plan.message(m);
      if (msg.kind != MessageKind::kSend || plan.is_self(msg)) continue;
      for (int32_t i = 0; i < msg.count; ++i) sum.Add(msg.indices[i], next + int64_t{i} * width);
      next += msg.count * width;
    }
  }
  // The forward overwrote every ghost row, so ghost inputs have no influence: zero gradient.
  sum.Finish(plan.nlocal());
  return absl::OkStatus();
}

ExchangeTotals& exchange_totals() {
  static ExchangeTotals totals;
  return totals;
}

template absl::Status ExchangeGhostsForward<float>(const PlanView&, const float*, float*, int64_t);
template absl::Status ExchangeGhostsForward<double>(const PlanView&, const double*, double*, int64_t);
template absl::Status ExchangeGhostsReverse<float>(const PlanView&, const float*, float*, int64_t);
template absl::Status ExchangeGhostsReverse<double>(const PlanView&, const double*, double*, int64_t);

}  // namespace deepmd::ops
