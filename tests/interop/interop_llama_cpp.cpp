// interop_llama_cpp: gsq's GGUF exports run in the real llama.cpp (node-llama-cpp's
// prebuilt binaries) and give the logits gsq computes.
//
//   test_interop_llama_cpp --data DIR --node-modules DIR --script llama_logits.mjs --work DIR
//
// For each case the model is exported with write_gguf_llama, held-out text
// (text/tinystories_val.txt, never trained on) is tokenized into sequences, llama.cpp's
// next-token logits after every token come from llama_logits.mjs, and gsq's FP32 forward
// of the same GGUF (read back through gsq's GGUF loader) is compared with them:
// top-1 agreement, max |Δlogit| and the perplexity of the sequences. Cases: stories260K
// and TinyStories-656K as f32/f16/q8_0, an L4Q 4-bit (group 32) model as Q4_1, and a
// LoRA adapter GGUF applied by llama.cpp on the base GGUF against the merged export.
//
// gsq's FP32 forward against llama.cpp, max |Δlogit|: f32 1e-3 (llama.cpp runs in F32
// with an F32 KV cache; the difference is summation order only); f16/bf16 0.1, q8_0 and
// q4_1 0.5: llama.cpp's CPU matmul converts the activations to the weight's dot-product
// type (F16, BF16, Q8_0, Q8_1 blocks of 32) while gsq multiplies FP32 activations by the
// decoded weights, so each product carries up to 2^-11 (F16), 2^-8 (BF16) or 1/254 (8-bit
// blocks) relative error of the activation on top; over 2-5 layers that moves logits of
// magnitude 10-20 by a few tenths (measured: 0.41 on stories260K q8_0). Perplexity within
// 0.5% for f32/f16, 2% for the 8/4-bit types. Top-1 agreement >= 99%, except 98% for q4_1:
// positions whose two best logits are closer than what llama.cpp's rounding moves flip
// (measured 445/452 = 98.5% on TinyStories-656K; mostly from Q8_1's block sum s, rounded
// to FP16 and multiplied by the Q4_1 block minimum, see below).
//
// That explanation is checked, not assumed: llama_cpp_emulation.hpp is a plain scalar
// forward of the same GGUF that rounds every product's activations as ggml-cpu does. For
// the q8_0 and q4_1 cases (stories260K's q8_0 file also has F16 ffn_down, its rows of 172
// not being whole blocks) the test
//   - checks the emulation itself: with rounding off it gives gsq's forward within 1e-3;
//   - compares llama.cpp with it, and that is where the top-1 >= 99% is asserted,
//     q4_1 included (perplexity within 0.5%);
//   - counts the positions where all logits agree within 1e-3, the f32 bound (FP32
//     summation order only): gsq's forward has none, the emulation must have at least half.
//     It cannot have all: each rounding is a step function, so an FP32 difference of one
//     ulp (ggml's SIMD exp and summation orders are not copied) that happens to straddle
//     a step (an 8-bit code, the FP16 block scale d or sum s) moves one product by a
//     whole step, and later layers and positions of that sequence carry it on. The max
//     |Δlogit| is that of such positions, so it keeps the bound 0.5 of the plain forward.
// Measured on this machine (x86, AVX-512): 72%, 96% and 74% exact positions (stories260K
// q8_0, TinyStories-656K q8_0, q4_1), the rest after such a crossing; top-1 702/704,
// 452/452, 451/452. Each detail of the rounding counts: with d kept in FP32, with q taken
// as x/d_fp16, or without Q8_1's FP16 sum s, no position is exact (without s, q4_1's
// top-1 falls back to the plain 445/452); with ties rounded away from zero, 16% and 56%
// for TinyStories-656K q8_0 and q4_1. f16 is not emulated: F16 steps are 2^-11 apart, so
// such crossings happen at most positions (tried: 3% and 25% exact), which shows nothing.
// Exit 0 pass, 1 fail, 77 skipped (no node or node-llama-cpp: message says how to install).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "gsq/core/rng.hpp"
#include "gsq/io/export.hpp"
#include "gsq/io/gguf_export.hpp"
#include "gsq/io/gguf_llama.hpp"
#include "gsq/io/load_llama.hpp"
#include "gsq/io/tokenizer_factory.hpp"
#include "gsq/model/llama.hpp"
#include "llama_cpp_emulation.hpp"

namespace fs = std::filesystem;

namespace {

constexpr int kSkip = 77;

struct Args {
  fs::path data, node_modules, script, work;
};

// A position whose logits all agree within this is one where the two forwards differ by
// FP32 summation order only (the f32 bound).
constexpr double kExactTol = 1e-3;

/// How one forward's next-token logits agree with llama.cpp's.
struct Agreement {
  std::int64_t positions = 0, agree = 0, exact = 0, targets = 0;  // exact: max |Δlogit| <= kExactTol
  double max_diff = 0, nll = 0, nll_llama = 0;

  /// One position: `ours` and `llama` are [vocab] logits; `next` the following token (-1: none).
  void add(const float* ours, const float* llama, std::int64_t vocab, std::int32_t next);
  double ppl() const { return std::exp(nll / static_cast<double>(targets)); }
  double ppl_llama() const { return std::exp(nll_llama / static_cast<double>(targets)); }
};

/// What an Agreement must reach.
struct Bounds {
  double tol = 0, ppl_tol = 0;  // max |Δlogit|, relative perplexity
  double top1 = 0.99, exact = 0;  // shares of positions: same top-1, exact (see kExactTol)
  bool ok(const Agreement& g) const {
    const auto n = static_cast<double>(g.positions);
    return g.positions > 0 && static_cast<double>(g.agree) >= top1 * n && static_cast<double>(g.exact) >= exact * n &&
           g.max_diff <= tol && std::fabs(g.ppl() / g.ppl_llama() - 1.0) <= ppl_tol;
  }
};

// The emulation with rounding off against gsq's forward: the same arithmetic in another
// summation order (as f32 against llama.cpp).
constexpr double kSanityTol = 1e-3;

struct Comparison {
  std::string model, type;
  std::int64_t bytes = 0;
  std::string note;
  Agreement plain;        // gsq's FP32 forward
  Bounds plain_bounds;
  bool emulate = false;   // also llama_cpp_emulation.hpp's forward of the GGUF:
  Agreement emulated;     //   with llama.cpp's activation rounding
  Bounds emulated_bounds;
  double sanity = 0;      //   max |Δlogit| without rounding against gsq's forward
  bool ok() const {
    return plain_bounds.ok(plain) && (!emulate || (emulated_bounds.ok(emulated) && sanity <= kSanityTol));
  }
};

gsq::LlamaTensors clone(const gsq::LlamaWeights& w) {
  gsq::LlamaTensors t;
  for (const auto& [name, x] : w.tensors) t.emplace(name, x.clone());
  return t;
}

/// Held-out sequences: paragraphs of the TinyStories validation text, BOS first, cut to `len`.
std::vector<std::vector<std::int32_t>> held_out(const fs::path& text, const gsq::Tokenizer& tok, int count, std::size_t len) {
  std::ifstream f(text);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string all = ss.str();
  std::vector<std::vector<std::int32_t>> out;
  std::size_t at = 0;
  while (static_cast<int>(out.size()) < count && at < all.size()) {
    std::size_t end = all.find("\n\n", at);
    if (end == std::string::npos) end = all.size();
    const std::string para = all.substr(at, end - at);
    at = end + 2;
    std::vector<std::int32_t> ids = tok.encode(para, true, false);
    if (ids.size() < 24) continue;
    if (ids.size() > len) ids.resize(len);
    out.push_back(std::move(ids));
  }
  return out;
}

int run_node(const Args& a, const fs::path& model, const fs::path& ids, const fs::path& out,
             const std::optional<fs::path>& lora) {
  std::string cmd = "NODE_PATH='" + a.node_modules.string() + "' node '" + a.script.string() + "' '" + model.string() +
                    "' '" + ids.string() + "' '" + out.string() + "'";
  if (lora) cmd += " '" + lora->string() + "'";
  cmd += " > '" + (a.work / "node.log").string() + "' 2>&1";
  return std::system(cmd.c_str());
}

/// −log-softmax of row at target.
double next_token_nll(const float* row, std::int64_t vocab, std::int32_t target) {
  double m = row[0];
  for (std::int64_t i = 1; i < vocab; ++i) m = std::max(m, static_cast<double>(row[i]));
  double s = 0;
  for (std::int64_t i = 0; i < vocab; ++i) s += std::exp(static_cast<double>(row[i]) - m);
  return -(static_cast<double>(row[target]) - m - std::log(s));
}

void Agreement::add(const float* ours, const float* llama, std::int64_t vocab, std::int32_t next) {
  std::int64_t top_o = 0, top_l = 0;
  double here = 0;
  for (std::int64_t v = 0; v < vocab; ++v) {
    const double d = std::fabs(static_cast<double>(ours[v]) - llama[v]);
    here = std::isnan(d) ? 1e30 : std::max(here, d);
    if (ours[v] > ours[top_o]) top_o = v;
    if (llama[v] > llama[top_l]) top_l = v;
  }
  max_diff = std::max(max_diff, here);
  ++positions;
  agree += top_o == top_l ? 1 : 0;
  exact += here <= kExactTol ? 1 : 0;
  if (next >= 0) {
    nll += next_token_nll(ours, vocab, next);
    nll_llama += next_token_nll(llama, vocab, next);
    ++targets;
  }
}

/// llama.cpp on `gguf` (+ `lora`) against gsq's forward of `reference` on `seqs`, and,
/// when c.emulate, against the emulation of llama.cpp on `gguf`.
bool compare(const Args& a, Comparison& c, const fs::path& gguf, const gsq::LlamaWeights& reference,
             const std::vector<std::vector<std::int32_t>>& seqs, const std::optional<fs::path>& lora = std::nullopt) {
  const fs::path ids = a.work / "ids.json", out = a.work / "logits.bin";
  {
    std::ofstream f(ids);
    f << "[";
    for (std::size_t s = 0; s < seqs.size(); ++s) {
      f << (s ? "," : "") << "[";
      for (std::size_t i = 0; i < seqs[s].size(); ++i) f << (i ? "," : "") << seqs[s][i];
      f << "]";
    }
    f << "]\n";
  }
  if (run_node(a, gguf, ids, out, lora) != 0) {
    std::ifstream log(a.work / "node.log");
    std::stringstream ss;
    ss << log.rdbuf();
    std::printf("FAIL %s %s: node-llama-cpp failed:\n%s\n", c.model.c_str(), c.type.c_str(), ss.str().c_str());
    return false;
  }
  const std::int64_t vocab = reference.config.vocab_size;
  std::ifstream in(out, std::ios::binary);
  gsq::Llama model(reference.config, clone(reference), {});
  std::optional<interop::LlamaCppEmulation> rounded, unrounded;
  if (c.emulate) {
    rounded.emplace(gguf, true);
    unrounded.emplace(gguf, false);
  }
  std::vector<float> row(static_cast<std::size_t>(vocab));
  for (const std::vector<std::int32_t>& seq : seqs) {
    const gsq::Tensor<float> logits = model.forward(seq, 1);
    gsq::Tensor<float> emulated;
    if (c.emulate) {
      emulated = rounded->forward(seq);
      const gsq::Tensor<float> plain = unrounded->forward(seq);
      for (std::int64_t i = 0; i < logits.numel(); ++i) {
        const double d = std::fabs(static_cast<double>(plain.data()[i]) - logits.data()[i]);
        c.sanity = std::isnan(d) ? 1e30 : std::max(c.sanity, d);
      }
    }
    for (std::size_t p = 0; p < seq.size(); ++p) {
      in.read(reinterpret_cast<char*>(row.data()), static_cast<std::streamsize>(row.size() * sizeof(float)));
      if (!in) {
        std::printf("FAIL %s %s: llama.cpp wrote too few logits\n", c.model.c_str(), c.type.c_str());
        return false;
      }
      const std::int64_t at = static_cast<std::int64_t>(p) * vocab;
      const std::int32_t next = p + 1 < seq.size() ? seq[p + 1] : -1;
      c.plain.add(logits.data() + at, row.data(), vocab, next);
      if (c.emulate) c.emulated.add(emulated.data() + at, row.data(), vocab, next);
    }
  }
  c.bytes = static_cast<std::int64_t>(fs::file_size(gguf));
  return true;
}

/// gsq's FP32 forward against llama.cpp, by GGUF type (see the file comment).
Bounds bounds_plain(const std::string& type) {
  if (type == "f32") return {.tol = 1e-3, .ppl_tol = 0.005};
  if (type == "f16" || type == "bf16") return {.tol = 0.1, .ppl_tol = 0.005};
  if (type == "q4_1") return {.tol = 0.5, .ppl_tol = 0.02, .top1 = 0.98};
  return {.tol = 0.5, .ppl_tol = 0.02};  // q8_0
}

/// The emulation against llama.cpp (q8_0, q4_1; see the file comment).
Bounds bounds_emulated() { return {.tol = 0.5, .ppl_tol = 0.005, .top1 = 0.99, .exact = 0.5}; }

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--data") a.data = argv[i + 1];
    if (k == "--node-modules") a.node_modules = argv[i + 1];
    if (k == "--script") a.script = argv[i + 1];
    if (k == "--work") a.work = argv[i + 1];
  }
  if (std::system("node --version > /dev/null 2>&1") != 0) {
    std::printf("SKIPPED: node is not installed (apt-get install nodejs npm; scripts/bootstrap.sh does)\n");
    return kSkip;
  }
  if (!fs::exists(a.node_modules / "node-llama-cpp")) {
    std::printf("SKIPPED: node-llama-cpp is not installed in %s (scripts/bootstrap.sh installs it: npm install "
                "--prefix %s node-llama-cpp@3)\n",
                a.node_modules.string().c_str(), a.node_modules.parent_path().string().c_str());
    return kSkip;
  }
  const fs::path s260 = a.data / "models/stories260K", t656 = a.data / "models/tinystories-656K",
                 val = a.data / "text/tinystories_val.txt";
  if (!fs::exists(s260 / "stories260K.bin") || !fs::exists(t656 / "model.safetensors") || !fs::exists(val)) {
    std::printf("SKIPPED: shared models/text absent under %s (set -DGSQ_DATA_DIR)\n", a.data.string().c_str());
    return kSkip;
  }
  fs::create_directories(a.work);
  std::vector<Comparison> results;
  bool all_ok = true;
  try {
    struct Model {
      std::string name;
      fs::path weights, tokenizer;
    };
    const std::vector<Model> models = {{"stories260K", s260 / "stories260K.bin", s260 / "tok512.bin"},
                                       {"TinyStories-656K", t656, t656}};
    for (const Model& m : models) {
      const gsq::LlamaWeights w = gsq::load_llama(m.weights);
      const auto tok = gsq::load_tokenizer(m.tokenizer);
      const gsq::GgufVocab vocab = gsq::gguf_vocab(*tok, m.tokenizer);
      const auto seqs = held_out(val, *tok, 8, 96);
      for (const std::string type : {"f32", "f16", "q8_0"}) {
        Comparison c;
        c.model = m.name;
        c.type = type;
        const fs::path gguf = a.work / (m.name + "-" + type + ".gguf");
        const gsq::GgufExportReport r = gsq::write_gguf_llama(gguf, w, vocab, {.type = gsq::parse_gguf_type(type), .name = m.name});
        if (!r.notes.empty()) c.note = std::to_string(r.notes.size()) + " tensors fell back to F16";
        c.plain_bounds = bounds_plain(type);
        c.emulate = type == "q8_0";
        c.emulated_bounds = bounds_emulated();
        const gsq::LlamaWeights back = gsq::read_gguf_llama(gguf);  // what llama.cpp reads
        all_ok = compare(a, c, gguf, back, seqs) && all_ok;
        results.push_back(c);
      }
    }
    {  // L4Q 4-bit, group 32, on TinyStories-656K: codes (LoRA perturbed) exported as Q4_1.
      const gsq::LlamaWeights w = gsq::load_llama(t656);
      const auto tok = gsq::load_tokenizer(t656);
      gsq::LlamaOptions o;
      o.adapter = gsq::ProjectionKind::kL4q;
      o.l4q.rank = 4;
      o.l4q.alpha = 8.0f;
      o.l4q.quant_bits = 4;
      o.l4q.quant_group = 32;
      gsq::Llama model(w.config, clone(w), o);
      std::uint64_t stream = 0;
      for (const gsq::Parameter& p : model.parameters()) {
        if (!p.name.ends_with(".lora_b")) continue;
        gsq::CounterRng rng(17, stream++);
        for (float& v : *p.value) v += 0.01f * rng.next_normal();
      }
      gsq::L4qQuantizedModel q = gsq::l4q_quantized_model(model);
      // Put step and minimum on the FP16 grid, as training with the FP16 option would, so
      // the Q4_1 file holds exactly this model.
      for (auto& [name, m] : q.quantized)
        for (std::int64_t r = 0; r < m.rows(); ++r)
          for (std::int64_t g = 0; g < m.groups_per_row(); ++g) {
            const float s = gsq::f16_to_float(gsq::float_to_f16(m.step(r, g)));
            const float mn = gsq::f16_to_float(gsq::float_to_f16(m.offset(r, g) - 8.0f * s));
            m.step_row(r)[g] = s;
            m.offset_row(r)[g] = mn + 8.0f * s;
          }
      const gsq::LlamaWeights dq = q.dequantized();
      Comparison c;
      c.model = "TinyStories-656K L4Q int4/G32";
      c.type = "q4_1";
      const fs::path gguf = a.work / "l4q-q4_1.gguf";
      const gsq::GgufExportReport r =
          gsq::write_gguf_llama(gguf, dq, gsq::gguf_vocab(*tok, t656), {.type = gsq::GgmlType::kF32, .name = "l4q"}, &q.quantized);
      c.note = std::to_string(r.l4q_tensors) + " projections from codes, max |w_gguf - w_l4q| " + std::to_string(r.l4q_max_abs_diff);
      c.plain_bounds = bounds_plain("q4_1");
      c.emulate = true;
      c.emulated_bounds = bounds_emulated();
      all_ok = compare(a, c, gguf, dq, held_out(val, *tok, 8, 96)) && all_ok;  // gsq: the L4Q model itself
      results.push_back(c);
    }
    {  // LoRA adapter GGUF on the base GGUF (llama.cpp) vs the merged model (gsq).
      const gsq::LlamaWeights w = gsq::load_llama(s260 / "stories260K.bin");
      const auto tok = gsq::load_tokenizer(s260 / "tok512.bin");
      const gsq::GgufVocab vocab = gsq::gguf_vocab(*tok, s260 / "tok512.bin");
      gsq::LlamaOptions o;
      o.adapter = gsq::ProjectionKind::kLora;
      o.lora.rank = 4;
      o.lora.alpha = 8.0f;
      gsq::Llama model(w.config, clone(w), o);
      std::map<std::string, gsq::GgufLoraPair> pairs;
      std::uint64_t stream = 0;
      for (const gsq::Parameter& p : model.parameters()) {
        gsq::CounterRng rng(23, stream++);
        const bool is_b = p.name.ends_with(".lora_b");
        if (is_b)
          for (float& v : *p.value) v += 0.05f * rng.next_normal();
        const std::string module = p.name.substr(0, p.name.size() - 7);
        gsq::GgufLoraPair& pair = pairs[module];
        pair.canonical = module + ".weight";
        (is_b ? pair.b : pair.a) = p.value->clone();
      }
      std::vector<gsq::GgufLoraPair> list;
      for (auto& [k, v] : pairs) list.push_back(std::move(v));
      const fs::path base = a.work / "lora-base.gguf", adapter = a.work / "lora-adapter.gguf";
      gsq::write_gguf_llama(base, w, vocab, {.type = gsq::GgmlType::kF32});
      gsq::write_gguf_lora_adapter(adapter, w.config, list, o.lora.alpha);
      const gsq::LlamaWeights merged = gsq::merged_llama_weights(model);
      Comparison c;
      c.model = "stories260K + LoRA r4 adapter";
      c.type = "f32";
      c.plain_bounds = bounds_plain("f32");
      c.note = "llama.cpp: base + --lora; gsq: merged W0 + alpha/r BA";  // not emulated: nothing rounds
      all_ok = compare(a, c, base, merged, held_out(val, *tok, 8, 96), adapter) && all_ok;
      results.push_back(c);
    }
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
  std::printf("| model | type | forward | top-1 agreement | max abs dlogit (tol) | positions within %.0e (min) | ppl | ppl llama.cpp | file bytes | note |\n", kExactTol);
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  auto print = [](const Comparison& c, const char* forward, const Agreement& g, const Bounds& b, const std::string& note) {
    const auto n = static_cast<double>(g.positions);
    std::printf("| %s | %s | %s | %lld/%lld = %.2f%% (>= %.0f%%) | %.3g (%.3g) | %lld = %.1f%% (%.0f%%) | %.4f | %.4f | %lld | %s%s |\n",
                c.model.c_str(), c.type.c_str(), forward, static_cast<long long>(g.agree),
                static_cast<long long>(g.positions), 100.0 * static_cast<double>(g.agree) / n, 100.0 * b.top1, g.max_diff,
                b.tol, static_cast<long long>(g.exact), 100.0 * static_cast<double>(g.exact) / n, 100.0 * b.exact, g.ppl(),
                g.ppl_llama(), static_cast<long long>(c.bytes), note.c_str(), b.ok(g) ? "" : " **FAIL**");
  };
  for (const Comparison& c : results) {
    print(c, "gsq FP32", c.plain, c.plain_bounds, c.note);
    if (c.emulate) {
      char sanity[160];
      std::snprintf(sanity, sizeof sanity, "without rounding vs gsq FP32: max abs dlogit %.3g (%.3g)%s", c.sanity,
                    kSanityTol, c.sanity <= kSanityTol ? "" : " **FAIL**");
      print(c, "llama.cpp rounding emulated", c.emulated, c.emulated_bounds, sanity);
    }
    all_ok = all_ok && c.ok();
  }
  std::printf(all_ok ? "PASS\n" : "FAIL\n");
  return all_ok ? 0 : 1;
}
