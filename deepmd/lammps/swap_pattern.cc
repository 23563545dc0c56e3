#include "deepmd/lammps/swap_pattern.h"

#include "absl/strings/str_cat.h"
#include "deepmd/ops/plan.h"

namespace deepmd::lammps {

SwapPattern::Swap& SwapPattern::swap(int k) {
  if (k >= static_cast<int>(swaps_.size())) swaps_.resize(k + 1);
  return swaps_[k];
}

void SwapPattern::BeginForward() { num_swaps_ = 0; }

void SwapPattern::PackForward(int n, const int* send_rows, int rank, double* buf) {
  Swap& s = swap(num_swaps_);
  s.send_rows.assign(send_rows, send_rows + n);
  s.send_peer = -1;
  for (int i = 0; i < n; ++i) buf[i] = rank;
}

void SwapPattern::UnpackForward(int n, int first_row, const double* buf) {
  Swap& s = swap(num_swaps_++);
  s.recv_count = n;
  s.recv_first = first_row;
  s.recv_peer = n > 0 ? static_cast<int>(buf[0]) : -1;
}

void SwapPattern::BeginReverse() { reverse_next_ = num_swaps_ - 1; }

void SwapPattern::PackReverse(int n, int rank, double* buf) {
  for (int i = 0; i < n; ++i) buf[i] = rank;
}

void SwapPattern::UnpackReverse(int n, const double* buf) {
  if (reverse_next_ < 0) return;  // more reverse calls than forward ones: BuildPlan reports it
  Swap& s = swaps_[reverse_next_--];
  s.send_peer = n > 0 ? static_cast<int>(buf[0]) : -1;
}

absl::StatusOr<std::vector<int32_t>> SwapPattern::BuildPlan(int32_t communicator, int rank, int size, int nlocal,
                                                            int nghost) const {
  if (reverse_next_ != -1) {
    return absl::InternalError(
        absl::StrCat("swap discovery saw ", num_swaps_, " forward swaps but a different number of reverse ones"));
  }
  ops::PlanBuilder builder(communicator, rank, size, nlocal, nghost);
  for (int k = 0; k < num_swaps_; ++k) {
    const Swap& s = swaps_[k];
    builder.BeginStage();
    if (!s.send_rows.empty()) builder.Send(s.send_peer, s.send_rows);
    if (s.recv_count > 0) builder.Receive(s.recv_peer, s.recv_count, s.recv_first);
  }
  absl::StatusOr<std::vector<int32_t>> plan = builder.Build();
  if (!plan.ok()) {
    return absl::InternalError(
        absl::StrCat("LAMMPS's swap pattern does not form a valid exchange plan (", plan.status().message(), ")"));
  }
  return plan;
}

}  // namespace deepmd::lammps
