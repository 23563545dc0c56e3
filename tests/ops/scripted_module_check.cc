// Loads a TorchScript module saved by ops_python_test.py (it calls deepmd_comm::exchange_ghosts and
// differentiates through it) and checks that C++ reproduces the results Python computed.
#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "deepmd/ops/ops.h"  // links the operators into this program

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MODULE.pt\n", argv[0]);
    return 2;
  }
  torch::jit::Module module = torch::jit::load(argv[1]);
  const at::Tensor plan = module.attr("example_plan").toTensor();
  const at::Tensor x = module.attr("example_x").toTensor();
  const auto outputs = module.forward({plan, x}).toTuple();
  const at::Tensor energy = outputs->elements()[0].toTensor();
  const at::Tensor grad = outputs->elements()[1].toTensor();
  const at::Tensor expected_energy = module.attr("expected_energy").toTensor();
  const at::Tensor expected_grad = module.attr("expected_grad").toTensor();
  const double energy_error = (energy - expected_energy).abs().item<double>();
  const double grad_error = (grad - expected_grad).abs().max().item<double>();
  // The scripted call and the C++ entry point both give the exchange Python expected.
  const at::Tensor expected_exchange = module.attr("expected_exchange").toTensor();
  const at::Tensor scripted = module.run_method("exchange", plan, x).toTensor();
  const double direct_error =
      std::max((deepmd::ops::ExchangeGhosts(plan, x) - expected_exchange).abs().max().item<double>(),
               (scripted - expected_exchange).abs().max().item<double>());
  std::printf("energy error %.3e, gradient error %.3e, direct error %.3e\n", energy_error, grad_error, direct_error);
  const bool ok =
      energy_error <= 1e-13 * std::abs(expected_energy.item<double>()) && grad_error <= 1e-14 && direct_error == 0;
  std::printf("%s\n", ok ? "1 passed, 0 failed" : "0 passed, 1 failed");
  return ok ? 0 : 1;
}
