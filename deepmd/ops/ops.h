// C++ entry points of the ghost-exchange operators (registered as deepmd_comm::exchange_ghosts and
// deepmd_comm::exchange_ghosts_reverse). They go through the dispatcher, so autograd applies.
#ifndef DEEPMD_OPS_OPS_H_
#define DEEPMD_OPS_OPS_H_

#include <ATen/ATen.h>

namespace deepmd::ops {

// Returns a copy of x ([nlocal + nghost, F], float32 or float64) whose ghost rows hold their owners'
// rows. x may also be the owned rows alone ([nlocal, F]: no padding needed; its gradient is then
// [nlocal, F] too). `plan` is the int32 plan tensor (docs/exchange_plan.md). Collective over the plan's
// ranks.
at::Tensor ExchangeGhosts(const at::Tensor& plan, const at::Tensor& x);

// The exact transpose: each ghost row of g is added into the row it was copied from; ghost rows of
// the result are zero.
at::Tensor ExchangeGhostsReverse(const at::Tensor& plan, const at::Tensor& g);

// Wraps plan words (for example PlanBuilder::Build's) into the int32 tensor the ops take.
at::Tensor PlanTensor(const std::vector<int32_t>& words);

}  // namespace deepmd::ops

#endif  // DEEPMD_OPS_OPS_H_
