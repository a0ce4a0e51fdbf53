// gsq-formats-demo: what GSE-INT does to real-looking data, one line per format.
//
// Quantizes a heavy-tailed [512, 2048] activation-like matrix with several GSE-INT
// formats (and NF4 for a weight) and prints bits per element, relative error and the
// SIMD path that ran. No arguments, no files.
#include <gsq/gsq.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

namespace {

gsq::Tensor<float> heavy_tailed(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  gsq::Tensor<float> t({rows, cols});
  gsq::CounterRng rng(seed, 0);
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    float v = rng.next_normal();
    if (i % 97 == 3) v *= 20.0f;  // outlier channels, as LLM activations have
    t[i] = v;
  }
  return t;
}

double relative_error(const gsq::Tensor<float>& a, const gsq::Tensor<float>& b) {
  double num = 0, den = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(a[i]) * a[i];
  }
  return std::sqrt(num / den);
}

}  // namespace

int main() {
  std::printf("gsq %d.%d.%d — GSE-INT formats on a heavy-tailed 512x2048 matrix\n",
              GSQ_VERSION_MAJOR, GSQ_VERSION_MINOR, GSQ_VERSION_PATCH);
  std::printf("CPU: %s\nSIMD path: %s\n\n", gsq::cpu_features().to_string().c_str(),
              std::string(gsq::isa_name(gsq::selected_isa())).c_str());
  const gsq::Tensor<float> x = heavy_tailed(512, 2048, 1);
  gsq::Tensor<float> back({512, 2048});

  std::printf("%-14s %12s %14s %12s\n", "format", "bits/elem", "rel. L2 error", "ms/quant");
  for (int bits : {8, 6, 5, 4}) {
    for (int group : {32, 128}) {
      const gsq::GseSpec spec{.bits = bits, .group = group};
      const auto t0 = std::chrono::steady_clock::now();
      const gsq::GseMatrix q = gsq::quantize_gse(x.view(), spec, /*transpose=*/false);
      const auto t1 = std::chrono::steady_clock::now();
      gsq::dequantize_gse(q, false, back.view());
      std::printf("%-14s %12.3f %14.5f %12.3f\n", spec.name().c_str(),
                  8.0 * double(q.bytes()) / double(x.numel()), relative_error(x, back),
                  std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
  }
  return 0;
}
