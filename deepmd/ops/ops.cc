// Registers the ghost-exchange operators with PyTorch: schemas, CPU kernels and autograd (the
// gradient of each op is the other, so double backward works).
#include "deepmd/ops/ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "deepmd/ops/exchange.h"
#include "deepmd/ops/plan.h"
#include "deepmd/ops/shared_memory.h"

namespace deepmd::ops {
namespace {

PlanView CheckedPlan(const at::Tensor& plan) {
  TORCH_CHECK(plan.device().is_cpu() && plan.scalar_type() == at::kInt && plan.dim() == 1,
              "deepmd_comm: the plan must be a 1-D int32 CPU tensor, got ", plan.scalar_type(), " ", plan.sizes(),
              " on ", plan.device());
  TORCH_CHECK(plan.is_contiguous(), "deepmd_comm: the plan tensor must be contiguous");
  absl::StatusOr<PlanView> view =
      PlanView::Parse(absl::MakeConstSpan(plan.data_ptr<int32_t>(), static_cast<size_t>(plan.numel())));
  TORCH_CHECK(view.ok(), "deepmd_comm: ", view.status().message());
  return *view;
}

// A result that peers write into (the forward's ghost rows) lives in shared memory when the host
// allows it, so that ranks of this host fill it with one copy (shared_memory.h).
at::Tensor NewResult(const PlanView& plan, const at::Tensor& like, bool peers_write) {
  const std::vector<int64_t> sizes = {plan.nrows(), like.size(1)};
  if (peers_write && plan.uses_mpi()) {
    if (void* p = SharedArena::Get().Allocate(sizes[0] * sizes[1] * like.element_size())) {
      return at::from_blob(
          p, sizes, [](void* q) { SharedArena::Get().Free(q); }, like.options());
    }
  }
  return at::empty(sizes, like.options());
}

// `owned_rows_only`: x may also hold just the nlocal owned rows (the forward: ghost inputs are
// overwritten anyway, so the caller need not pad).
template <typename Kernel>
at::Tensor Run(const char* name, const at::Tensor& plan_tensor, const at::Tensor& x, bool peers_write,
               bool owned_rows_only, Kernel kernel) {
  const PlanView plan = CheckedPlan(plan_tensor);
  TORCH_CHECK(x.dim() == 2, "deepmd_comm::", name, ": the features must be [nlocal + nghost, F]",
              owned_rows_only ? " or [nlocal, F]" : "", ", got shape ", x.sizes());
  TORCH_CHECK(x.size(0) == plan.nrows() || (owned_rows_only && x.size(0) == plan.nlocal()), "deepmd_comm::", name,
              ": the features have ", x.size(0), " rows but the plan has nlocal + nghost = ", plan.nlocal(), " + ",
              plan.nghost(), " = ", plan.nrows(), owned_rows_only ? " (or give the nlocal owned rows alone)" : "");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "deepmd_comm::", name,
              ": features must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(x.device().is_cpu(), "deepmd_comm::", name, ": this build exchanges CPU tensors only, got ", x.device());
  const at::Tensor in = x.contiguous();
  at::Tensor out = NewResult(plan, in, peers_write);
  absl::Status status = x.scalar_type() == at::kFloat
                            ? kernel(plan, in.data_ptr<float>(), out.data_ptr<float>(), in.size(1))
                            : kernel(plan, in.data_ptr<double>(), out.data_ptr<double>(), in.size(1));
  TORCH_CHECK(status.ok(), "deepmd_comm::", name, ": ", status.message());
  return out;
}

at::Tensor ExchangeGhostsCpu(const at::Tensor& plan, const at::Tensor& x) {
  return Run(
      "exchange_ghosts", plan, x, /*peers_write=*/true, /*owned_rows_only=*/true,
      [](const PlanView& p, auto* in, auto* out, int64_t width) { return ExchangeGhostsForward(p, in, out, width); });
}

at::Tensor ExchangeGhostsReverseCpu(const at::Tensor& plan, const at::Tensor& g) {
  return Run(
      "exchange_ghosts_reverse", plan, g, /*peers_write=*/false, /*owned_rows_only=*/false,
      [](const PlanView& p, auto* in, auto* out, int64_t width) { return ExchangeGhostsReverse(p, in, out, width); });
}

// Autograd: d(exchange)/dx applied to a gradient is the reverse exchange and vice versa (its owned
// rows when x held only those). Both calls go through the dispatcher, so the backward is itself
// differentiable.
template <at::Tensor (*Forward)(const at::Tensor&, const at::Tensor&),
          at::Tensor (*Backward)(const at::Tensor&, const at::Tensor&)>
class ExchangeFunction : public torch::autograd::Function<ExchangeFunction<Forward, Backward>> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& plan, const at::Tensor& x) {
    ctx->save_for_backward({plan});
    ctx->saved_data["rows"] = x.size(0);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return Forward(plan, x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor plan = ctx->get_saved_variables()[0];
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor()};
    const int64_t rows = ctx->saved_data["rows"].toInt();
    const at::Tensor g = Backward(plan, grads[0]);
    return {at::Tensor(), rows == g.size(0) ? g : g.narrow(0, 0, rows)};
  }
};

using ForwardFunction = ExchangeFunction<ExchangeGhosts, ExchangeGhostsReverse>;
using ReverseFunction = ExchangeFunction<ExchangeGhostsReverse, ExchangeGhosts>;

at::Tensor ExchangeGhostsAutograd(const at::Tensor& plan, const at::Tensor& x) {
  return ForwardFunction::apply(plan, x);
}

at::Tensor ExchangeGhostsReverseAutograd(const at::Tensor& plan, const at::Tensor& g) {
  return ReverseFunction::apply(plan, g);
}

}  // namespace

at::Tensor ExchangeGhosts(const at::Tensor& plan, const at::Tensor& x) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("deepmd_comm::exchange_ghosts", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  return op.call(plan, x);
}

at::Tensor ExchangeGhostsReverse(const at::Tensor& plan, const at::Tensor& g) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("deepmd_comm::exchange_ghosts_reverse", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  return op.call(plan, g);
}

at::Tensor PlanTensor(const std::vector<int32_t>& words) {
  return at::tensor(words, at::TensorOptions().dtype(at::kInt));
}

}  // namespace deepmd::ops

TORCH_LIBRARY(deepmd_comm, m) {
  m.def("exchange_ghosts(Tensor plan, Tensor x) -> Tensor");
  m.def("exchange_ghosts_reverse(Tensor plan, Tensor g) -> Tensor");
}

TORCH_LIBRARY_IMPL(deepmd_comm, CPU, m) {
  m.impl("exchange_ghosts", deepmd::ops::ExchangeGhostsCpu);
  m.impl("exchange_ghosts_reverse", deepmd::ops::ExchangeGhostsReverseCpu);
}

TORCH_LIBRARY_IMPL(deepmd_comm, Autograd, m) {
  m.impl("exchange_ghosts", deepmd::ops::ExchangeGhostsAutograd);
  m.impl("exchange_ghosts_reverse", deepmd::ops::ExchangeGhostsReverseAutograd);
}
