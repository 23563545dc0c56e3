// Registers deepmd_kernels::repflow_env (repflow_env.h): schema, CPU kernel, and an Autograd kernel
// whose torch::autograd::Function calls the hand-written backward. Differentiable once w.r.t. the
// coordinates, as the other kernels (ops.cc).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "deepmd/kernels/repflow_angle.h"
#include "deepmd/kernels/repflow_env.h"

namespace deepmd::kernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kGrain = 16;  // centres per task when intra-op threads are enabled
constexpr const char* kOp = "deepmd_kernels::repflow_env";

struct Options {
  double e_rcut, e_rcut_smth, a_rcut, a_rcut_smth, protection;
  int64_t a_sel;
  bool exp_switch, edge_dist;
};

struct CheckedEnv {
  at::Tensor coord, nbr, centre, ctype, davg, dstd;
};

CheckedEnv Check(const at::Tensor& coord, const at::Tensor& nbr, const at::Tensor& centre, const at::Tensor& ctype,
                 const at::Tensor& davg, const at::Tensor& dstd) {
  TORCH_CHECK(coord.dim() == 2 && coord.size(1) == 3, kOp, ": coord must be [rows, 3], got ", coord.sizes());
  TORCH_CHECK(coord.scalar_type() == at::kFloat || coord.scalar_type() == at::kDouble, kOp,
              ": float32 or float64 only, got ", coord.scalar_type());
  TORCH_CHECK(nbr.dim() == 2 && nbr.scalar_type() == at::kLong, kOp, ": nbr must be int64 [nb, nnei], got ",
              nbr.scalar_type(), " ", nbr.sizes());
  const int64_t nb = nbr.size(0), N = nbr.size(1), rows = coord.size(0);
  auto index = [&](const at::Tensor& t, const char* name, at::IntArrayRef shape, int64_t lo, int64_t hi) {
    TORCH_CHECK(t.sizes() == shape && t.scalar_type() == at::kLong && t.device().is_cpu(), kOp, ": ", name,
                " must be a CPU int64 tensor of shape ", shape, ", got ", t.scalar_type(), " ", t.sizes());
    const at::Tensor c = t.contiguous();
    if (c.numel() > 0) {
      const int64_t* p = c.data_ptr<int64_t>();
      const auto [mn, mx] = std::minmax_element(p, p + c.numel());
      TORCH_CHECK(*mn >= lo && *mx < hi, kOp, ": ", name, " holds ", *mn, " .. ", *mx, ", outside [", lo, ", ", hi,
                  ")");
    }
    return c;
  };
  TORCH_CHECK(davg.dim() == 3 && davg.size(1) == N && davg.size(2) == 4, kOp, ": davg must be [ntypes, nnei = ", N,
              ", 4], got ", davg.sizes());
  const int64_t ntypes = davg.size(0);
  auto values = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.sizes() == davg.sizes(), kOp, ": ", name, " must have shape ", davg.sizes(), ", got ", t.sizes());
    TORCH_CHECK(t.scalar_type() == coord.scalar_type() && t.device().is_cpu(), kOp, ": ", name, " is ", t.scalar_type(),
                " on ", t.device(), ", coord is ", coord.scalar_type(), " (CPU tensors only)");
    TORCH_CHECK(!t.requires_grad(), kOp, ": ", name, " requires grad; the op differentiates the coordinates only");
    return t.contiguous();
  };
  TORCH_CHECK(coord.device().is_cpu(), kOp, ": CPU tensors only, coord is on ", coord.device());
  return {coord.contiguous(),
          index(nbr, "nbr", {nb, N}, -1, rows),
          index(centre, "centre", {nb}, 0, rows),
          index(ctype, "ctype", {nb}, -1, ntypes),
          values(davg, "davg"),
          values(dstd, "dstd")};
}

template <typename T>
EnvInputs<T> Inputs(const CheckedEnv& c, const Options& o) {
  EnvInputs<T> in;
  in.nb = c.nbr.size(0);
  in.nnei = c.nbr.size(1);
  in.ntypes = c.davg.size(0);
  in.coord = c.coord.data_ptr<T>();
  in.nbr = c.nbr.data_ptr<int64_t>();
  in.centre = c.centre.data_ptr<int64_t>();
  in.ctype = c.ctype.data_ptr<int64_t>();
  in.davg = c.davg.data_ptr<T>();
  in.dstd = c.dstd.data_ptr<T>();
  in.e_rcut = o.e_rcut;
  in.e_rcut_smth = o.e_rcut_smth;
  in.a_rcut = o.a_rcut;
  in.a_rcut_smth = o.a_rcut_smth;
  in.protection = o.protection;
  in.exp_switch = o.exp_switch;
  in.edge_dist = o.edge_dist;
  in.ncut = o.a_sel > 0 ? std::min(o.a_sel, in.nnei) : 0;
  return in;
}

// The angle list's width: 1 + the last real candidate slot over all centres (at least 1 when there are
// candidates), as dpa3.py's used_width.
int64_t UsedWidth(const bool* real, int64_t nb, int64_t ncut) {
  int64_t width = ncut > 0 ? 1 : 0;
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t j = ncut - 1; j >= width; --j) {
      if (real[b * ncut + j]) {
        width = j + 1;
        break;
      }
    }
  }
  return width;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> RepflowEnvCpu(
    const at::Tensor& coord, const at::Tensor& nbr, const at::Tensor& centre, const at::Tensor& ctype,
    const at::Tensor& davg, const at::Tensor& dstd, double e_rcut, double e_rcut_smth, double a_rcut,
    double a_rcut_smth, int64_t a_sel, double protection, bool exp_switch, bool edge_dist) {
  const CheckedEnv c = Check(coord, nbr, centre, ctype, davg, dstd);
  const Options o{e_rcut, e_rcut_smth, a_rcut, a_rcut_smth, protection, a_sel, exp_switch, edge_dist};
  const int64_t nb = c.nbr.size(0), N = c.nbr.size(1);
  const at::TensorOptions real = c.coord.options();
  at::Tensor h2sw = at::empty({nb, N, 3}, real), sw = at::empty({nb, N}, real), edge_in = at::empty({nb, N}, real);
  at::Tensor a_mask, a_sw, cosine;
  AT_DISPATCH_FLOATING_TYPES(c.coord.scalar_type(), "repflow_env", [&] {
    EnvInputs<scalar_t> in = Inputs<scalar_t>(c, o);
    at::Tensor a_real = at::empty({nb, in.ncut}, at::kBool);
    EnvOutputs<scalar_t> out;
    out.h2sw = h2sw.data_ptr<scalar_t>();
    out.sw = sw.data_ptr<scalar_t>();
    out.edge_in = edge_in.data_ptr<scalar_t>();
    bool* candidates = a_real.data_ptr<bool>();
    at::parallel_for(0, nb, kGrain, [&](int64_t b0, int64_t b1) { EnvEdges(in, out, candidates, b0, b1); });
    in.nang = UsedWidth(candidates, nb, in.ncut);
    a_mask = a_real.narrow(1, 0, in.nang).contiguous();
    at::Tensor offset = at::empty({nb + 1}, at::kLong);
    PairOffsets(a_mask.data_ptr<bool>(), nb, in.nang, offset.data_ptr<int64_t>());
    in.a_mask = a_mask.data_ptr<bool>();
    in.offset = offset.data_ptr<int64_t>();
    a_sw = at::empty({nb, in.nang}, real);
    cosine = at::empty({in.offset[nb]}, real);
    out.a_sw = a_sw.data_ptr<scalar_t>();
    out.cosine = cosine.data_ptr<scalar_t>();
    at::parallel_for(0, nb, kGrain, [&](int64_t b0, int64_t b1) { EnvAngles(in, out, b0, b1); });
  });
  return {h2sw, sw, edge_in, a_mask, a_sw, cosine};
}

class RepflowEnvFunction : public torch::autograd::Function<RepflowEnvFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& coord, const at::Tensor& nbr,
                               const at::Tensor& centre, const at::Tensor& ctype, const at::Tensor& davg,
                               const at::Tensor& dstd, double e_rcut, double e_rcut_smth, double a_rcut,
                               double a_rcut_smth, int64_t a_sel, double protection, bool exp_switch, bool edge_dist) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(kOp, "").typed<decltype(RepflowEnvCpu)>();
    auto [h2sw, sw, edge_in, a_mask, a_sw, cosine] =
        op.call(coord, nbr, centre, ctype, davg, dstd, e_rcut, e_rcut_smth, a_rcut, a_rcut_smth, a_sel, protection,
                exp_switch, edge_dist);
    ctx->save_for_backward({coord, nbr, centre, ctype, davg, dstd, a_mask});
    ctx->saved_data["e_rcut"] = e_rcut;
    ctx->saved_data["e_rcut_smth"] = e_rcut_smth;
    ctx->saved_data["a_rcut"] = a_rcut;
    ctx->saved_data["a_rcut_smth"] = a_rcut_smth;
    ctx->saved_data["a_sel"] = a_sel;
    ctx->saved_data["protection"] = protection;
    ctx->saved_data["exp_switch"] = exp_switch;
    ctx->saved_data["edge_dist"] = edge_dist;
    ctx->mark_non_differentiable({a_mask});
    return {h2sw, sw, edge_in, a_mask, a_sw, cosine};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!c10::GradMode::is_enabled(), kOp,
                " is differentiable once only (create_graph=True asks for a second derivative); use the reference "
                "formulation (export --reference-layers) for that");
    const variable_list s = ctx->get_saved_variables();
    const CheckedEnv c = Check(s[0], s[1], s[2], s[3], s[4], s[5]);
    const Options o{ctx->saved_data["e_rcut"].toDouble(),     ctx->saved_data["e_rcut_smth"].toDouble(),
                    ctx->saved_data["a_rcut"].toDouble(),     ctx->saved_data["a_rcut_smth"].toDouble(),
                    ctx->saved_data["protection"].toDouble(), ctx->saved_data["a_sel"].toInt(),
                    ctx->saved_data["exp_switch"].toBool(),   ctx->saved_data["edge_dist"].toBool()};
    const at::Tensor a_mask = s[6].contiguous();
    const int64_t nb = c.nbr.size(0);
    at::Tensor offset = at::empty({nb + 1}, at::kLong);
    PairOffsets(a_mask.data_ptr<bool>(), nb, a_mask.size(1), offset.data_ptr<int64_t>());
    std::vector<at::Tensor> g(6);
    for (size_t k : {0, 1, 2, 4, 5}) g[k] = grads[k].defined() ? grads[k].contiguous() : at::Tensor();
    at::Tensor g_coord = at::zeros_like(c.coord);
    AT_DISPATCH_FLOATING_TYPES(c.coord.scalar_type(), "repflow_env_backward", [&] {
      EnvInputs<scalar_t> in = Inputs<scalar_t>(c, o);
      in.nang = a_mask.size(1);
      in.a_mask = a_mask.data_ptr<bool>();
      in.offset = offset.data_ptr<int64_t>();
      auto ptr = [&](size_t k) { return g[k].defined() ? g[k].data_ptr<scalar_t>() : nullptr; };
      EnvGradients<scalar_t> grad;
      grad.g_h2sw = ptr(0);
      grad.g_sw = ptr(1);
      grad.g_edge_in = ptr(2);
      grad.g_a_sw = ptr(4);
      grad.g_cosine = ptr(5);
      grad.coord = g_coord.data_ptr<scalar_t>();
      EnvBackward(in, grad);
    });
    const at::Tensor none;
    return {g_coord, none, none, none, none, none, none, none, none, none, none, none, none, none};
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> RepflowEnvAutograd(
    const at::Tensor& coord, const at::Tensor& nbr, const at::Tensor& centre, const at::Tensor& ctype,
    const at::Tensor& davg, const at::Tensor& dstd, double e_rcut, double e_rcut_smth, double a_rcut,
    double a_rcut_smth, int64_t a_sel, double protection, bool exp_switch, bool edge_dist) {
  variable_list out = RepflowEnvFunction::apply(coord, nbr, centre, ctype, davg, dstd, e_rcut, e_rcut_smth, a_rcut,
                                                a_rcut_smth, a_sel, protection, exp_switch, edge_dist);
  return {out[0], out[1], out[2], out[3], out[4], out[5]};
}

}  // namespace
}  // namespace deepmd::kernels

TORCH_LIBRARY_FRAGMENT(deepmd_kernels, m) {
  m.def(
      "repflow_env(Tensor coord, Tensor nbr, Tensor centre, Tensor ctype, Tensor davg, Tensor dstd, float e_rcut, "
      "float e_rcut_smth, float a_rcut, float a_rcut_smth, int a_sel, float protection, bool exp_switch, "
      "bool edge_dist) -> (Tensor h2sw, Tensor sw, Tensor edge_in, Tensor a_mask, Tensor a_sw, Tensor cosine)");
}

TORCH_LIBRARY_IMPL(deepmd_kernels, CPU, m) { m.impl("repflow_env", deepmd::kernels::RepflowEnvCpu); }

TORCH_LIBRARY_IMPL(deepmd_kernels, Autograd, m) { m.impl("repflow_env", deepmd::kernels::RepflowEnvAutograd); }
