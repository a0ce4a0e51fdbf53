// Uses the umbrella header the way a user would and checks one round trip.
#include <gsq/gsq.hpp>

#include <cstdio>

int main() {
  gsq::Tensor<float> x({3, 40});
  for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = static_cast<float>(i % 7) - 3.0f;
  gsq::GseMatrix q = gsq::quantize_gse(x.view(), {.bits = 8, .group = 32}, /*transpose=*/false);
  gsq::Tensor<float> back({3, 40});
  gsq::dequantize_gse(q, /*transpose=*/false, back.view());
  for (std::int64_t i = 0; i < x.numel(); ++i)
    if (back[i] != x[i]) return 1;  // small integers are exact in INT8
  std::printf("gsq consumer OK (isa: %s)\n", std::string(gsq::isa_name(gsq::selected_isa())).c_str());
  return 0;
}
