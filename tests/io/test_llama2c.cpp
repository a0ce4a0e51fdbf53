// llama2.c checkpoints: stories260K as documented, hostile headers, write/read round trips.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "gsq/io/llama2c.hpp"
#include "gsq/io/load_llama.hpp"
#include "io/io_test_util.hpp"
#include "support/test_support.hpp"

namespace {

using gsq::test::append;
using gsq::test::expect_io_error;

// A small random model in llama2.c layout: header + floats (+ classifier when untied).
std::vector<std::uint8_t> tiny_llama2c(bool tied, std::uint64_t seed) {
  const std::int32_t dim = 8, hidden = 12, layers = 2, heads = 2, kv = 1, vocab = 11, seq = 4;
  std::vector<std::uint8_t> out;
  for (std::int32_t v : {dim, hidden, layers, heads, kv, tied ? vocab : -vocab, seq}) append(out, v);
  const std::int64_t hs = dim / heads, kv_dim = hs * kv;
  const std::int64_t floats = vocab * dim + layers * (2 * dim + 2 * dim * dim + 2 * kv_dim * dim + 3 * hidden * dim) +
                              dim + seq * hs + (tied ? 0 : vocab * dim);
  const gsq::Tensor<float> values = gsq::test::random_matrix(1, floats, seed);
  for (float f : values) append(out, f);
  return out;
}

gsq::LlamaWeights read_mem(const std::vector<std::uint8_t>& bytes) {
  return gsq::read_llama2c(gsq::MappedFile::from_bytes(bytes, "mem.bin"));
}

float float_at(const std::vector<std::uint8_t>& bytes, std::int64_t offset) {
  float f;
  std::memcpy(&f, bytes.data() + offset, 4);
  return f;
}

}  // namespace

TEST_SUITE("io") {
  TEST_CASE("llama2c: stories260K loads with the documented config") {
    const auto path = gsq::test::data_file("models/stories260K/stories260K.bin");
    const auto golden_path = gsq::test::data_file("golden/stories260K.json");
    if (!path || !golden_path) return;
    const gsq::LlamaWeights w = gsq::load_llama(*path);
    const gsq::LlamaConfig& c = w.config;
    const nlohmann::json g = nlohmann::json::parse(std::ifstream(*golden_path))["config"];
    gsq::test::check_config_matches_golden(c, g);
    CHECK(g["rope_style"] == "interleaved");
    CHECK(c.rope_style == gsq::RopeStyle::kInterleaved);
    CHECK(c.kv_dim() == 32);
    CHECK(w.tensors.size() == 1 + 5 * 9 + 1);
    CHECK(w.tensors.count("lm_head.weight") == 0);
    CHECK(w.parameter_count() == 264128 - 512 * 8);  // all floats but the RoPE tables
    CHECK(gsq::tensor_shape(w.at("model.layers.4.mlp.down_proj.weight")) == std::vector<std::int64_t>{64, 172});
    CHECK(gsq::tensor_shape(w.at("model.layers.0.self_attn.k_proj.weight")) == std::vector<std::int64_t>{32, 64});
  }

  TEST_CASE("llama2c: stories260K tensors sit at the offsets the data README gives") {
    const auto path = gsq::test::data_file("models/stories260K/stories260K.bin");
    if (!path) return;
    const std::vector<std::uint8_t> raw = gsq::test::read_bytes(*path);
    const gsq::LlamaWeights w = gsq::read_llama2c(*path);
    // Offsets in floats, computed by hand from the README's layout.
    const std::int64_t emb = 0, rms_att = 512 * 64, wq = rms_att + 5 * 64, wk = wq + 5 * 4096,
                       wv = wk + 5 * 2048, wo = wv + 5 * 2048, rms_ffn = wo + 5 * 4096,
                       w1 = rms_ffn + 5 * 64, w2 = w1 + 5 * 172 * 64, w3 = w2 + 5 * 64 * 172,
                       rms_final = w3 + 5 * 172 * 64;
    auto at = [&](std::int64_t floats) { return float_at(raw, 28 + 4 * floats); };
    CHECK(w.at("model.embed_tokens.weight")(511, 63) == at(emb + 511 * 64 + 63));
    CHECK(w.at("model.layers.2.input_layernorm.weight")[5] == at(rms_att + 2 * 64 + 5));
    CHECK(w.at("model.layers.1.self_attn.q_proj.weight")(3, 7) == at(wq + 4096 + 3 * 64 + 7));
    CHECK(w.at("model.layers.3.self_attn.k_proj.weight")(31, 0) == at(wk + 3 * 2048 + 31 * 64));
    CHECK(w.at("model.layers.0.self_attn.v_proj.weight")(1, 1) == at(wv + 65));
    CHECK(w.at("model.layers.4.self_attn.o_proj.weight")(63, 63) == at(wo + 4 * 4096 + 4095));
    CHECK(w.at("model.layers.2.post_attention_layernorm.weight")[0] == at(rms_ffn + 128));
    CHECK(w.at("model.layers.1.mlp.gate_proj.weight")(171, 2) == at(w1 + 172 * 64 + 171 * 64 + 2));
    CHECK(w.at("model.layers.3.mlp.down_proj.weight")(10, 171) == at(w2 + 3 * 64 * 172 + 10 * 172 + 171));
    CHECK(w.at("model.layers.4.mlp.up_proj.weight")(0, 0) == at(w3 + 4 * 172 * 64));
    CHECK(w.at("model.norm.weight")[63] == at(rms_final + 63));
    // The skipped tables are cos/sin of pos·10000^(-2j/8): check a few.
    const std::int64_t freq = rms_final + 64;
    CHECK(at(freq + 0) == 1.0f);                                    // cos(0)
    CHECK(std::fabs(at(freq + 4 * 3 + 1) - std::cos(0.3f)) < 1e-6f);  // pos 3, j 1
    CHECK(std::fabs(at(freq + 2048 + 4 * 3 + 1) - std::sin(0.3f)) < 1e-6f);
  }

  TEST_CASE("llama2c: write then read is bitwise and the file matches the original") {
    const auto path = gsq::test::data_file("models/stories260K/stories260K.bin");
    if (!path) return;
    const gsq::LlamaWeights w = gsq::read_llama2c(*path);
    gsq::test::TempDir dir;
    gsq::write_llama2c(dir / "copy.bin", w);
    CHECK(dir.entries() == 1);
    const gsq::LlamaWeights back = gsq::read_llama2c(dir / "copy.bin");
    CHECK(back.tensors.size() == w.tensors.size());
    for (const auto& kv : w.tensors) {
      const std::string& name = kv.first;  // a plain reference: CAPTURE captures it (clang 14)
      const gsq::Tensor<float>& t = kv.second;
      CAPTURE(name);
      REQUIRE(back.tensors.count(name) == 1);
      CHECK(gsq::test::bitwise_equal(back.at(name).data(), t.data(), t.numel()));
    }
    // Byte-identical outside the RoPE tables; those within an ulp (torch's float cos/sin).
    const std::vector<std::uint8_t> a = gsq::test::read_bytes(*path), b = gsq::test::read_bytes(dir / "copy.bin");
    REQUIRE(a.size() == b.size());
    const gsq::Llama2cLayout layout = gsq::llama2c_layout(gsq::MappedFile::open(*path));
    const auto rope_begin = static_cast<std::size_t>(layout.rope_tables_offset);
    const auto rope_end = rope_begin + static_cast<std::size_t>(layout.rope_tables_bytes);
    CHECK(std::memcmp(a.data(), b.data(), rope_begin) == 0);
    CHECK(std::memcmp(a.data() + rope_end, b.data() + rope_end, a.size() - rope_end) == 0);
    for (std::size_t i = rope_begin; i < rope_end; i += 4)
      REQUIRE(std::fabs(float_at(a, static_cast<std::int64_t>(i)) - float_at(b, static_cast<std::int64_t>(i))) <= 1.2e-7f);
  }

  TEST_CASE("llama2c: an untied classifier is read and written") {
    for (bool tied : {true, false}) {
      CAPTURE(tied);
      const std::vector<std::uint8_t> bytes = tiny_llama2c(tied, 7);
      const gsq::LlamaWeights w = read_mem(bytes);
      CHECK(w.config.tied_embeddings == tied);
      CHECK(w.config.vocab_size == 11);
      CHECK(w.tensors.count("lm_head.weight") == (tied ? 0u : 1u));
      if (!tied) CHECK(w.at("lm_head.weight")(10, 7) == float_at(bytes, static_cast<std::int64_t>(bytes.size()) - 4));
      gsq::test::TempDir dir;
      gsq::write_llama2c(dir / "m.bin", w);
      const std::vector<std::uint8_t> again = gsq::test::read_bytes(dir / "m.bin");
      REQUIRE(again.size() == bytes.size());
      const gsq::Llama2cLayout layout = gsq::llama2c_layout(gsq::MappedFile::from_bytes(bytes, "m"));
      const auto rope = static_cast<std::size_t>(layout.rope_tables_offset);
      CHECK(std::memcmp(again.data(), bytes.data(), rope) == 0);
      const auto after = rope + static_cast<std::size_t>(layout.rope_tables_bytes);
      CHECK(std::memcmp(again.data() + after, bytes.data() + after, bytes.size() - after) == 0);
    }
  }

  TEST_CASE("llama2c: truncated or padded files name the size mismatch") {
    const std::vector<std::uint8_t> good = tiny_llama2c(false, 1);
    for (std::size_t n = 0; n < good.size(); n += (n < 64 ? 1 : 37)) {
      CAPTURE(n);
      const std::vector<std::uint8_t> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
      const auto e = expect_io_error([&] { (void)read_mem(cut); });
      REQUIRE(e.has_value());
      CHECK(e->code() == gsq::ErrorCode::kTruncated);
      CHECK(e->offset() == (n < 28 ? static_cast<std::int64_t>(n / 4 * 4) : static_cast<std::int64_t>(n)));
    }
    std::vector<std::uint8_t> padded = good;
    padded.push_back(0);
    const auto e = expect_io_error([&] { (void)read_mem(padded); });
    REQUIRE(e.has_value());
    CHECK(e->code() == gsq::ErrorCode::kCorrupt);
    CHECK(e->offset() == static_cast<std::int64_t>(good.size()));
  }

  TEST_CASE("llama2c: hostile header fields are rejected before allocating") {
    const std::vector<std::uint8_t> good = tiny_llama2c(true, 2);
    struct Case {
      int field;
      std::int32_t value;
      std::int64_t offset;
    };
    const std::vector<Case> cases = {
        // offset -1: the size check fails (at the end of the file) rather than a field
        {0, 0, 0},
        {0, -8, 0},
        {1, 0, 4},
        {2, -1, 8},
        {3, 3, 0},  // dim 8 is not a multiple of 3 heads
        {4, 2, -1},  // valid shape, but the file is too short for it
        {0, 0x7FFFFFFF, 0},
        {2, 0x7FFFFFFF, -1},
        {5, std::numeric_limits<std::int32_t>::min(), -1},
        {6, 0x7FFFFFFF, -1},
        {0, 0x616b3432, 0},  // a version-1/2 export's magic
    };
    for (const Case& c : cases) {
      CAPTURE(c.field);
      CAPTURE(c.value);
      std::vector<std::uint8_t> bad = good;
      std::memcpy(bad.data() + 4 * c.field, &c.value, 4);
      const auto e = expect_io_error([&] { (void)read_mem(bad); });
      REQUIRE(e.has_value());
      CHECK(e->offset() == (c.offset >= 0 ? c.offset : static_cast<std::int64_t>(bad.size())));
    }
  }

  TEST_CASE("llama2c: Hugging Face weights are written with q and k rows un-permuted") {
    const std::vector<std::uint8_t> bytes = tiny_llama2c(true, 3);
    gsq::LlamaWeights w = read_mem(bytes);
    w.config.rope_style = gsq::RopeStyle::kHalf;  // pretend these rows are HF-permuted
    gsq::test::TempDir dir;
    gsq::write_llama2c(dir / "m.bin", w);
    const gsq::LlamaWeights back = gsq::read_llama2c(dir / "m.bin");
    CHECK(back.config.rope_style == gsq::RopeStyle::kInterleaved);
    const std::int64_t hs = w.config.head_size(), half = hs / 2, in = w.config.dim;
    for (const char* name : {"model.layers.1.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"}) {
      CAPTURE(name);
      const gsq::Tensor<float>& hf = w.at(name);
      const gsq::Tensor<float>& meta = back.at(name);
      const std::int64_t heads = hf.dim(0) / hs;
      for (std::int64_t h = 0; h < heads; ++h)
        for (std::int64_t i = 0; i < half; ++i)
          for (std::int64_t s = 0; s < 2; ++s)
            for (std::int64_t c = 0; c < in; ++c)
              REQUIRE(meta(h * hs + 2 * i + s, c) == hf(h * hs + s * half + i, c));
    }
    CHECK(gsq::test::bitwise_equal(back.at("model.layers.0.self_attn.v_proj.weight").data(),
                                   w.at("model.layers.0.self_attn.v_proj.weight").data(), 8 * 4));
    // eps / theta the format cannot hold need allow_lossy.
    w.config.norm_eps = 1e-6f;
    CHECK_THROWS_AS(gsq::write_llama2c(dir / "n.bin", w), gsq::ConfigError);
    gsq::write_llama2c(dir / "n.bin", w, {.allow_lossy = true});
    CHECK(gsq::read_llama2c(dir / "n.bin").config.norm_eps == 1e-5f);
  }

  TEST_CASE("llama2c: a failed write leaves the existing file intact") {
    const std::vector<std::uint8_t> bytes = tiny_llama2c(true, 4);
    gsq::LlamaWeights w = read_mem(bytes);
    gsq::test::TempDir dir;
    gsq::test::write_bytes(dir / "m.bin", {1, 2, 3});
    w.tensors.erase("model.norm.weight");  // the writer's check fails before any byte
    CHECK_THROWS_AS(gsq::write_llama2c(dir / "m.bin", w), gsq::IoError);
    CHECK(gsq::test::read_bytes(dir / "m.bin") == std::vector<std::uint8_t>{1, 2, 3});
    CHECK(dir.entries() == 1);
  }

  TEST_CASE("llama2c: load_llama names PyTorch zips and missing files") {
    gsq::test::TempDir dir;
    gsq::test::write_bytes(dir / "pytorch_model.bin", {'P', 'K', 3, 4, 0, 0, 0, 0});
    const auto zip = expect_io_error([&] { (void)gsq::load_llama(dir / "pytorch_model.bin"); });
    REQUIRE(zip.has_value());
    CHECK(std::string(zip->what()).find("PyTorch") != std::string::npos);
    const auto missing = expect_io_error([&] { (void)gsq::load_llama(dir / "nope.bin"); });
    REQUIRE(missing.has_value());
    CHECK(missing->code() == gsq::ErrorCode::kOpenFailed);
    const auto nodir = expect_io_error([&] { (void)gsq::load_llama(dir.path()); });
    REQUIRE(nodir.has_value());
    CHECK(nodir->code() == gsq::ErrorCode::kOpenFailed);
  }
}
