// GGUF: FP16 conversion, the ggml block codecs (layout and error bounds), the streaming
// writer against the hostile parser (every value type, every tensor type, alignment,
// truncation at every byte, forged counts and offsets, refused types by name), and the
// llama export → import round trip (logits equal, RoPE permutation undone, tokenizer,
// L4Q codes as Q4_1 without loss).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gsq/core/error.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/io/export.hpp"
#include "gsq/io/gguf.hpp"
#include "gsq/io/gguf_export.hpp"
#include "gsq/io/gguf_llama.hpp"
#include "gsq/io/gguf_writer.hpp"
#include "gsq/io/hf_llama.hpp"
#include "gsq/io/llama2c.hpp"
#include "gsq/io/load_llama.hpp"
#include "gsq/io/tokenizer_factory.hpp"
#include "gsq/model/llama.hpp"
#include "gsq/model/weights.hpp"
#include "io_test_util.hpp"
#include "support/test_support.hpp"

namespace {

std::vector<float> random_values(std::int64_t n, std::uint64_t seed, float scale = 1.0f) {
  gsq::CounterRng rng(seed, 0);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v) x = scale * rng.next_normal();
  return v;
}

/// A small GGUF with every metadata type and one tensor per ggml type gsq encodes.
void write_sample(const std::filesystem::path& path, std::uint32_t alignment = 32) {
  gsq::GgufWriter w(path, alignment);
  using T = gsq::GgufValueType;
  w.set("u8", gsq::GgufValue::integer(T::kU8, 200));
  w.set("i8", gsq::GgufValue::integer(T::kI8, -100));
  w.set("u16", gsq::GgufValue::integer(T::kU16, 60000));
  w.set("i16", gsq::GgufValue::integer(T::kI16, -30000));
  w.set("u32", gsq::GgufValue::u32(4000000000u));
  w.set("i32", gsq::GgufValue::i32(-2000000000));
  w.set("u64", gsq::GgufValue::u64(std::uint64_t{1} << 63));
  w.set("i64", gsq::GgufValue::integer(T::kI64, -(std::int64_t{1} << 62)));
  w.set("f32", gsq::GgufValue::f32(0.1f));
  gsq::GgufValue f64;
  f64.type = T::kF64;
  f64.f = 0.1;
  w.set("f64", f64);
  w.set("bool", gsq::GgufValue::boolean(true));
  w.set("str", gsq::GgufValue::string("h\xC3\xA9llo"));
  w.set("strs", gsq::GgufValue::strings({"a", "", "ccc"}));
  w.set("nested", gsq::GgufValue::array(T::kArray, {gsq::GgufValue::i32s({1, 2}), gsq::GgufValue::i32s({})}));
  w.add_tensor("f32", {17}, gsq::GgmlType::kF32);
  w.add_tensor("f16", {3, 5}, gsq::GgmlType::kF16);
  w.add_tensor("bf16", {2, 1, 7}, gsq::GgmlType::kBF16);
  w.add_tensor("q8_0", {3, 64}, gsq::GgmlType::kQ8_0);
  w.add_tensor("q4_0", {2, 32}, gsq::GgmlType::kQ4_0);
  w.add_tensor("q4_1", {5, 96}, gsq::GgmlType::kQ4_1);
  w.write_tensor("f32", random_values(17, 1));
  w.write_tensor("f16", random_values(15, 2));
  w.write_tensor("bf16", random_values(14, 3));
  w.write_tensor("q8_0", random_values(192, 4));
  w.write_tensor("q4_0", random_values(64, 5));
  w.write_tensor("q4_1", random_values(480, 6));
  w.finish();
}

gsq::GgufVocab toy_vocab(std::int64_t n) {
  gsq::GgufVocab v;
  v.bos_id = 1;
  v.eos_id = 2;
  v.unk_id = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    v.tokens.push_back(i == 0 ? "<unk>" : i == 1 ? "<s>" : i == 2 ? "</s>" : "\xE2\x96\x81t" + std::to_string(i));
    v.scores.push_back(-static_cast<float>(i));
    v.types.push_back(i == 0 ? 2 : i < 3 ? 3 : 1);
  }
  return v;
}

double max_abs_diff(const gsq::Tensor<float>& a, const gsq::Tensor<float>& b) {
  double m = 0.0;
  for (std::int64_t i = 0; i < a.numel(); ++i)
    m = std::max(m, std::fabs(static_cast<double>(a.data()[i]) - b.data()[i]));
  return m;
}

const std::vector<std::int32_t> kIds = {1, 5, 9, 3, 7, 2, 11, 30, 1, 4, 4, 8, 21, 39, 0, 6};

}  // namespace

TEST_SUITE("io") {
  TEST_CASE("gguf: float_to_f16 is exact on every half and rounds to nearest even") {
    for (std::uint32_t h = 0; h < 65536; ++h) {
      const float f = gsq::f16_to_float(static_cast<std::uint16_t>(h));
      if (std::isnan(f)) continue;
      REQUIRE(gsq::float_to_f16(f) == h);
    }
    // Midpoints between consecutive halves go to the even one; just above, to the upper.
    for (std::uint32_t h = 0; h < 0x7BFF; h += 37) {
      const double lo = gsq::f16_to_float(static_cast<std::uint16_t>(h));
      const double hi = gsq::f16_to_float(static_cast<std::uint16_t>(h + 1));
      const auto mid = static_cast<float>((lo + hi) / 2);
      CHECK(gsq::float_to_f16(mid) == ((h & 1) == 0 ? h : h + 1));
      CHECK(gsq::float_to_f16(std::nextafter(mid, 1e9f)) == h + 1);
    }
    CHECK(gsq::float_to_f16(65520.0f) == 0x7C00);  // rounds past the largest half: Inf
    CHECK(gsq::float_to_f16(-1e9f) == 0xFC00);
    CHECK(std::isnan(gsq::f16_to_float(gsq::float_to_f16(std::numeric_limits<float>::quiet_NaN()))));
    CHECK(gsq::representable_in_f16(0.375f));
    CHECK_FALSE(gsq::representable_in_f16(0.1f));
  }

  TEST_CASE("gguf: 4-bit blocks hold element j in the low nibble and j+16 in the high one") {
    std::uint8_t q41[20] = {};
    gsq::io::detail::put_u16(q41, gsq::float_to_f16(0.5f));   // d
    gsq::io::detail::put_u16(q41 + 2, gsq::float_to_f16(-1.0f));  // m
    for (int j = 0; j < 16; ++j) q41[4 + j] = static_cast<std::uint8_t>(j | ((15 - j) << 4));
    float x[32];
    gsq::ggml_decode(gsq::GgmlType::kQ4_1, q41, 32, x);
    for (int j = 0; j < 16; ++j) {
      CHECK(x[j] == 0.5f * static_cast<float>(j) - 1.0f);
      CHECK(x[j + 16] == 0.5f * static_cast<float>(15 - j) - 1.0f);
    }
    std::uint8_t q40[18] = {};
    gsq::io::detail::put_u16(q40, gsq::float_to_f16(2.0f));
    q40[2] = 0xF0;  // element 0: q = 0 → -16; element 16: q = 15 → 14
    gsq::ggml_decode(gsq::GgmlType::kQ4_0, q40, 32, x);
    CHECK(x[0] == -16.0f);
    CHECK(x[16] == 14.0f);
  }

  TEST_CASE("gguf: block codecs stay within their step of the input") {
    for (std::int64_t blocks : {1, 2, 5}) {
      const std::vector<float> v = random_values(32 * blocks, 11 + static_cast<std::uint64_t>(blocks), 3.0f);
      for (gsq::GgmlType t : {gsq::GgmlType::kQ8_0, gsq::GgmlType::kQ4_0, gsq::GgmlType::kQ4_1, gsq::GgmlType::kF16,
                              gsq::GgmlType::kBF16, gsq::GgmlType::kF32}) {
        CAPTURE(gsq::ggml_type_info(t).name);
        std::vector<std::uint8_t> enc(static_cast<std::size_t>(gsq::ggml_row_bytes(t, 32 * blocks)));
        gsq::ggml_encode(t, v, enc.data());
        std::vector<float> dec(v.size());
        gsq::ggml_decode(t, enc.data(), 32 * blocks, dec.data());
        for (std::int64_t b = 0; b < blocks; ++b) {
          float amax = 0, lo = v[static_cast<std::size_t>(b * 32)], hi = lo;
          for (int j = 0; j < 32; ++j) {
            const float x = v[static_cast<std::size_t>(b * 32 + j)];
            amax = std::max(amax, std::fabs(x));
            lo = std::min(lo, x);
            hi = std::max(hi, x);
          }
          double bound = 0;
          switch (t) {
            case gsq::GgmlType::kQ8_0: bound = amax / 127.0 * 0.5 * 1.01 + amax * 1e-3; break;
            case gsq::GgmlType::kQ4_0: bound = amax / 8.0 * 1.01 + amax * 1e-3; break;  // +max clamps from 8 to 7
            case gsq::GgmlType::kQ4_1: bound = (hi - lo) / 15.0 * 0.5 * 1.01 + (hi - lo) * 2e-3; break;
            case gsq::GgmlType::kF16: bound = amax * 0x1p-11; break;
            case gsq::GgmlType::kBF16: bound = amax * 0x1p-8; break;
            case gsq::GgmlType::kF32: bound = 0; break;
          }
          for (int j = 0; j < 32; ++j) {
            const auto k = static_cast<std::size_t>(b * 32 + j);
            REQUIRE(std::fabs(static_cast<double>(dec[k]) - v[k]) <= bound);
          }
        }
      }
    }
    std::vector<std::uint8_t> out(64);
    CHECK_THROWS_AS(gsq::ggml_encode(gsq::GgmlType::kQ8_0, std::vector<float>(33, 1.0f), out.data()), gsq::ShapeError);
  }

  TEST_CASE("gguf: writer and parser round-trip every value type and tensor type") {
    for (std::uint32_t alignment : {32u, 64u, 1u}) {
      CAPTURE(alignment);
      gsq::test::TempDir dir;
      write_sample(dir / "s.gguf", alignment);
      CHECK(dir.entries() == 1);  // no temporary left behind
      const gsq::GgufFile g = gsq::GgufFile::open(dir / "s.gguf");
      CHECK(g.version() == 3);
      CHECK(g.alignment() == alignment);
      CHECK(g.data_offset() % alignment == 0);
      CHECK(g.get_int("u8") == 200);
      CHECK(g.get_int("i8") == -100);
      CHECK(g.get_int("u16") == 60000);
      CHECK(g.get_int("i16") == -30000);
      CHECK(g.get_int("u32") == 4000000000);
      CHECK(g.get_int("i32") == -2000000000);
      CHECK(g.require("u64").u == (std::uint64_t{1} << 63));
      CHECK(g.get_int("i64") == -(std::int64_t{1} << 62));
      CHECK(g.get_number("f32") == doctest::Approx(0.1).epsilon(1e-7));
      CHECK(static_cast<float>(g.get_number("f32")) == 0.1f);
      CHECK(g.get_number("f64") == 0.1);
      CHECK(g.get_int("bool") == 1);
      CHECK(g.get_string("str") == "h\xC3\xA9llo");
      const auto& strs = g.get_array("strs", gsq::GgufValueType::kString);
      REQUIRE(strs.size() == 3);
      CHECK(strs[2].s == "ccc");
      const auto& nested = g.get_array("nested", gsq::GgufValueType::kArray);
      REQUIRE(nested.size() == 2);
      CHECK(nested[0].items.at(1).i == 2);
      CHECK_THROWS_AS(g.get_string("u8"), gsq::IoError);
      CHECK_THROWS_AS(g.get_int("missing"), gsq::IoError);

      const std::vector<std::pair<std::string, std::vector<std::int64_t>>> expected = {
          {"f32", {17}}, {"f16", {3, 5}}, {"bf16", {2, 1, 7}}, {"q8_0", {3, 64}}, {"q4_0", {2, 32}}, {"q4_1", {5, 96}}};
      REQUIRE(g.tensors().size() == expected.size());
      std::uint64_t seed = 1;
      for (const auto& [name, shape] : expected) {
        const gsq::GgufTensorInfo* t = g.find_tensor(name);
        REQUIRE(t != nullptr);
        CHECK(t->shape() == shape);
        CHECK(t->data_begin % alignment == 0);
        const gsq::Tensor<float> x = g.to_float(*t);
        std::vector<float> v = random_values(x.numel(), seed++);
        // Decoding matches encoding then decoding the same values directly.
        const auto type = static_cast<gsq::GgmlType>(t->type);
        std::vector<std::uint8_t> enc(static_cast<std::size_t>(t->bytes));
        for (std::int64_t r = 0; r < x.numel() / t->ne[0]; ++r)
          gsq::ggml_encode(type, std::span<const float>(v).subspan(static_cast<std::size_t>(r * t->ne[0]), static_cast<std::size_t>(t->ne[0])),
                           enc.data() + r * gsq::ggml_row_bytes(type, t->ne[0]));
        CHECK(std::memcmp(enc.data(), g.raw(*t).data(), enc.size()) == 0);
      }
    }
  }

  TEST_CASE("gguf: the writer refuses misuse") {
    gsq::test::TempDir dir;
    {
      gsq::GgufWriter w(dir / "a.gguf");
      CHECK_THROWS_AS(w.add_tensor("x", {4, 33}, gsq::GgmlType::kQ8_0), gsq::ShapeError);
      w.add_tensor("x", {2, 32}, gsq::GgmlType::kQ4_1);
      w.add_tensor("y", {3}, gsq::GgmlType::kF32);
      CHECK_THROWS(w.add_tensor("x", {1}, gsq::GgmlType::kF32));
      CHECK_THROWS(w.write_tensor("y", std::vector<float>(3)));  // out of order
      w.write_tensor("x", std::vector<float>(64, 1.0f));
      CHECK_THROWS(w.set("late", gsq::GgufValue::u32(1)));
      CHECK_THROWS(w.finish());  // "y" missing
    }
    CHECK(dir.entries() == 0);  // nothing committed, the temporary removed
  }

  TEST_CASE("gguf: every truncation of a valid file is an IoError naming it") {
    gsq::test::TempDir dir;
    write_sample(dir / "s.gguf");
    const std::vector<std::uint8_t> bytes = gsq::test::read_bytes(dir / "s.gguf");
    std::int64_t end = 0;  // the padding after the last tensor is optional
    const gsq::GgufFile whole = gsq::GgufFile::open(dir / "s.gguf");
    for (const gsq::GgufTensorInfo& t : whole.tensors()) end = std::max(end, t.data_begin + t.bytes);
    CHECK(end > static_cast<std::int64_t>(bytes.size()) - 32);
    for (std::size_t n = 0; n < static_cast<std::size_t>(end); ++n) {
      std::vector<std::uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
      try {
        (void)gsq::GgufFile::parse(gsq::MappedFile::from_bytes(std::move(cut), "cut.gguf"));
        FAIL("a file cut at " << n << " of " << bytes.size() << " bytes parsed");
      } catch (const gsq::IoError& e) {
        REQUIRE(e.file() == "cut.gguf");
        REQUIRE(e.offset() <= static_cast<std::int64_t>(n));
      }
    }
  }

  TEST_CASE("gguf: forged counts, sizes, offsets and types are refused before use") {
    // Header: magic, version, n_tensors, n_kv; one kv "k" = u32; one tensor "t" [32] F32.
    auto build = [](std::uint32_t version, std::uint64_t n_tensors, std::uint64_t n_kv, std::uint64_t key_len,
                    std::uint32_t n_dims, std::uint64_t ne0, std::uint32_t type, std::uint64_t offset) {
      std::vector<std::uint8_t> b;
      gsq::test::append(b, gsq::GgufFile::kMagic);
      gsq::test::append(b, version);
      gsq::test::append(b, n_tensors);
      gsq::test::append(b, n_kv);
      gsq::test::append(b, key_len);
      b.push_back('k');
      gsq::test::append(b, std::uint32_t{4});
      gsq::test::append(b, std::uint32_t{7});
      gsq::test::append(b, std::uint64_t{1});
      b.push_back('t');
      gsq::test::append(b, n_dims);
      gsq::test::append(b, ne0);
      gsq::test::append(b, type);
      gsq::test::append(b, offset);
      b.resize(256, 0);
      return b;
    };
    auto parse = [](std::vector<std::uint8_t> b) {
      return gsq::GgufFile::parse(gsq::MappedFile::from_bytes(std::move(b), "forged.gguf"));
    };
    const gsq::GgufFile ok = parse(build(3, 1, 1, 1, 1, 32, 0, 0));
    CHECK(ok.tensors().at(0).bytes == 128);
    CHECK(ok.get_int("k") == 7);
    struct Case {
      const char* what;
      std::vector<std::uint8_t> bytes;
      gsq::ErrorCode code;
    };
    std::vector<Case> cases = {
        {"version 1", build(1, 1, 1, 1, 1, 32, 0, 0), gsq::ErrorCode::kUnsupported},
        {"version 9", build(9, 1, 1, 1, 1, 32, 0, 0), gsq::ErrorCode::kCorrupt},
        {"2^60 tensors", build(3, std::uint64_t{1} << 60, 1, 1, 1, 32, 0, 0), gsq::ErrorCode::kTruncated},
        {"2^62 kvs", build(3, 1, std::uint64_t{1} << 62, 1, 1, 32, 0, 0), gsq::ErrorCode::kTruncated},
        {"key of 2^63 bytes", build(3, 1, 1, std::uint64_t{1} << 63, 1, 32, 0, 0), gsq::ErrorCode::kTruncated},
        {"5 dims", build(3, 1, 1, 1, 5, 32, 0, 0), gsq::ErrorCode::kCorrupt},
        {"zero dim", build(3, 1, 1, 1, 1, 0, 0, 0), gsq::ErrorCode::kCorrupt},
        {"huge dim", build(3, 1, 1, 1, 1, std::uint64_t{1} << 50, 0, 0), gsq::ErrorCode::kCorrupt},
        {"data past the end", build(3, 1, 1, 1, 1, 1024, 0, 0), gsq::ErrorCode::kTruncated},
        {"misaligned offset", build(3, 1, 1, 1, 1, 32, 0, 4), gsq::ErrorCode::kCorrupt},
        {"unknown type", build(3, 1, 1, 1, 1, 32, 77, 0), gsq::ErrorCode::kUnsupported},
        {"Q8_0 row of 33", build(3, 1, 1, 1, 1, 33, 8, 0), gsq::ErrorCode::kCorrupt},
    };
    std::vector<std::uint8_t> bad_magic = build(3, 1, 1, 1, 1, 32, 0, 0);
    bad_magic[0] = 'X';
    cases.push_back({"bad magic", bad_magic, gsq::ErrorCode::kCorrupt});
    for (Case& c : cases) {
      CAPTURE(c.what);
      const auto e = gsq::test::expect_io_error([&] { (void)parse(std::move(c.bytes)); });
      REQUIRE(e);
      CHECK(e->code() == c.code);
      CHECK(std::string(e->what()).find("forged.gguf") != std::string::npos);
    }
    // A K-quant tensor lists but is refused by name when decoded.
    const gsq::GgufFile k = parse(build(3, 1, 1, 1, 1, 256, 12, 0));
    CHECK(k.tensors().at(0).bytes == 144);
    const auto e = gsq::test::expect_io_error([&] { (void)k.to_float(k.tensors().at(0)); });
    REQUIRE(e);
    CHECK(e->code() == gsq::ErrorCode::kUnsupported);
    CHECK(std::string(e->what()).find("Q4_K") != std::string::npos);
  }

  TEST_CASE("gguf: llama export reloads with the same logits for either RoPE style") {
    for (gsq::RopeStyle style : {gsq::RopeStyle::kInterleaved, gsq::RopeStyle::kHalf}) {
      for (bool tied : {true, false}) {
        CAPTURE(tied);
        CAPTURE(static_cast<int>(style));
        gsq::test::TempDir dir;
        gsq::LlamaConfig c = gsq::test::tiny_llama_config();
        c.rope_style = style;
        c.tied_embeddings = tied;
        c.norm_eps = 1e-6f;
        c.rope_theta = 5000.0f;
        gsq::LlamaWeights w;
        w.config = c;
        w.source = "random";
        w.tensors = gsq::random_llama_weights(c, 3);
        gsq::Llama original(c, gsq::random_llama_weights(c, 3), {});
        const gsq::Tensor<float> expected = original.forward(kIds, 2);
        gsq::write_gguf_llama(dir / "m.gguf", w, toy_vocab(c.vocab_size), {.type = gsq::GgmlType::kF32});
        const gsq::LlamaWeights back = gsq::load_llama(dir / "m.gguf");
        CHECK(back.config.rope_style == gsq::RopeStyle::kInterleaved);
        CHECK(back.config.tied_embeddings == tied);
        CHECK(back.config.norm_eps == c.norm_eps);
        CHECK(back.config.rope_theta == c.rope_theta);
        CHECK(back.config.dim == c.dim);
        CHECK(back.config.n_kv_heads == c.n_kv_heads);
        CHECK(back.config.hidden_dim == c.hidden_dim);
        // v, o, the MLP and the norms are bitwise the same tensors.
        const std::string v = gsq::llama_layer_tensor_name(1, "self_attn.v_proj.weight");
        CHECK(gsq::test::bitwise_equal(back.at(v).data(), w.at(v).data(), w.at(v).numel()));
        gsq::LlamaTensors t;
        for (const auto& [name, x] : back.tensors) t.emplace(name, x.clone());
        gsq::Llama reloaded(back.config, std::move(t), {});
        const gsq::Tensor<float> got = reloaded.forward(kIds, 2);
        CHECK(max_abs_diff(got, expected) < 1e-5);
      }
    }
  }

  TEST_CASE("gguf: quantized exports decode to what the codecs give") {
    gsq::test::TempDir dir;
    gsq::LlamaConfig c = gsq::test::tiny_llama_config();  // hidden 48: down_proj rows fall back
    c.dim = 64;
    c.hidden_dim = 96;
    gsq::LlamaWeights w;
    w.config = c;
    w.source = "random";
    w.tensors = gsq::random_llama_weights(c, 4);
    for (gsq::GgmlType type : {gsq::GgmlType::kF16, gsq::GgmlType::kBF16, gsq::GgmlType::kQ8_0, gsq::GgmlType::kQ4_0,
                               gsq::GgmlType::kQ4_1}) {
      CAPTURE(gsq::ggml_type_info(type).name);
      const gsq::GgufExportReport r = gsq::write_gguf_llama(dir / "q.gguf", w, toy_vocab(c.vocab_size), {.type = type});
      CHECK(r.notes.empty());
      const gsq::GgufFile g = gsq::GgufFile::open(dir / "q.gguf");
      CHECK(g.find_tensor("blk.0.ffn_down.weight")->type == static_cast<std::uint32_t>(type));
      CHECK(g.find_tensor("blk.0.attn_norm.weight")->type == 0);  // norms stay F32
      CHECK(g.get_int("general.file_type") == gsq::gguf_file_type(type));
      const gsq::LlamaWeights back = gsq::read_gguf_llama(g);
      const std::string name = gsq::llama_layer_tensor_name(0, "mlp.up_proj.weight");
      const gsq::Tensor<float>& src = w.at(name);
      std::vector<std::uint8_t> enc(static_cast<std::size_t>(gsq::ggml_row_bytes(type, src.numel())));
      gsq::ggml_encode(type, std::span<const float>(src.data(), static_cast<std::size_t>(src.numel())), enc.data());
      std::vector<float> dec(static_cast<std::size_t>(src.numel()));
      gsq::ggml_decode(type, enc.data(), src.numel(), dec.data());
      CHECK(gsq::test::bitwise_equal(back.at(name).data(), dec.data(), src.numel()));
    }
    c.hidden_dim = 48;  // 48 is not a multiple of 32
    w.config = c;
    w.tensors = gsq::random_llama_weights(c, 4);
    const gsq::GgufExportReport r = gsq::write_gguf_llama(dir / "q.gguf", w, toy_vocab(c.vocab_size), {.type = gsq::GgmlType::kQ8_0});
    CHECK(r.notes.size() == static_cast<std::size_t>(c.n_layers));
    CHECK(gsq::GgufFile::open(dir / "q.gguf").find_tensor("blk.1.ffn_down.weight")->type == 1);
  }

  TEST_CASE("gguf: L4Q codes become Q4_1 without loss on the FP16 grid") {
    gsq::test::TempDir dir;
    gsq::LlamaConfig c = gsq::test::tiny_llama_config();
    c.rope_style = gsq::RopeStyle::kHalf;  // q/k rows are permuted: codes must follow
    c.dim = 64;
    c.hidden_dim = 96;
    gsq::LlamaWeights w;
    w.config = c;
    w.source = "random";
    w.tensors = gsq::random_llama_weights(c, 5);
    std::map<std::string, gsq::UniformMatrix> l4q;
    gsq::CounterRng rng(7, 0);
    for (int bits : {4, 3}) {
      CAPTURE(bits);
      l4q.clear();
      for (const char* proj : {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "mlp.down_proj.weight"}) {
        const std::string name = gsq::llama_layer_tensor_name(1, proj);
        gsq::Tensor<float>& dense = w.at(name);
        gsq::UniformMatrix m(dense.dim(0), dense.dim(1), {bits, 32});
        for (std::int64_t r = 0; r < m.rows(); ++r) {
          for (std::int64_t g = 0; g < m.groups_per_row(); ++g) {
            m.step_row(r)[g] = gsq::f16_to_float(gsq::float_to_f16(0.01f + 0.02f * rng.next_uniform()));
            // b = m + 2^(n-1)·s with m on the FP16 grid, so the exported minimum is exact.
            const float mn = gsq::f16_to_float(gsq::float_to_f16(-0.1f * rng.next_uniform()));
            m.offset_row(r)[g] = mn + static_cast<float>(1 << (bits - 1)) * m.step_row(r)[g];
          }
          for (std::int64_t k = 0; k < m.cols(); ++k)
            m.set_code(r, k, m.spec().qmin() + static_cast<int>(rng.next_uniform() * (1 << bits)) % (1 << bits));
        }
        for (std::int64_t r = 0; r < m.rows(); ++r)
          for (std::int64_t k = 0; k < m.cols(); ++k) dense.data()[r * m.cols() + k] = m.value(r, k);
        l4q.emplace(name, std::move(m));
      }
      const gsq::GgufExportReport r =
          gsq::write_gguf_llama(dir / "l4q.gguf", w, toy_vocab(c.vocab_size), {.type = gsq::GgmlType::kF32}, &l4q);
      CHECK(r.l4q_tensors == 3);
      CHECK(r.notes.empty());
      CHECK(r.l4q_max_abs_diff <= 1e-6);
      const gsq::GgufFile g = gsq::GgufFile::open(dir / "l4q.gguf");
      CHECK(g.find_tensor("blk.1.attn_q.weight")->type == 3);
      CHECK(g.find_tensor("blk.0.attn_q.weight")->type == 0);
      // Reloaded (interleaved rows), the model computes what the original one does.
      gsq::Llama original(c, [&] {
        gsq::LlamaTensors t;
        for (const auto& [name, x] : w.tensors) t.emplace(name, x.clone());
        return t;
      }(), {});
      const gsq::LlamaWeights back = gsq::read_gguf_llama(g);
      gsq::LlamaTensors t;
      for (const auto& [name, x] : back.tensors) t.emplace(name, x.clone());
      gsq::Llama reloaded(back.config, std::move(t), {});
      CHECK(max_abs_diff(reloaded.forward(kIds, 2), original.forward(kIds, 2)) < 1e-5);
    }
    // Off the FP16 grid: exported anyway, the rounding reported.
    for (auto& [name, m] : l4q) m.step_row(0)[0] = 0.0123456f;
    const gsq::GgufExportReport r =
        gsq::write_gguf_llama(dir / "l4q.gguf", w, toy_vocab(c.vocab_size), {.type = gsq::GgmlType::kF32}, &l4q);
    REQUIRE(r.notes.size() == 1);
    CHECK(r.l4q_max_abs_diff > 0.0);
  }

  TEST_CASE("gguf: round_to_fp16_grid is the FP16 rounding, and L4Q on the grid exports exactly") {
    gsq::CounterRng rng(3, 0);
    for (int i = 0; i < 20000; ++i) {
      const float x = std::ldexp(rng.next_normal(), static_cast<int>(rng.next_uniform() * 40.0f) - 30);
      REQUIRE(gsq::round_to_fp16_grid(x) == gsq::f16_to_float(gsq::float_to_f16(x)));
    }
    gsq::LlamaConfig c = gsq::test::tiny_llama_config();
    c.dim = 64;
    c.hidden_dim = 96;
    c.rope_style = gsq::RopeStyle::kHalf;
    gsq::LlamaOptions o;
    o.adapter = gsq::ProjectionKind::kL4q;
    o.l4q.rank = 4;
    o.l4q.quant_group = 32;
    o.l4q.fp16_grid = true;
    gsq::Llama model(c, gsq::random_llama_weights(c, 8), o);
    for (int step = 0; step < 2; ++step) {  // parameters move as an optimizer would move them
      std::uint64_t stream = 0;
      for (const gsq::Parameter& p : model.parameters()) {
        gsq::CounterRng r(40 + static_cast<std::uint64_t>(step), stream++);
        for (float& v : *p.value) v += 0.001f * r.next_normal();
      }
      (void)model.forward(kIds, 2);
    }
    const gsq::L4qQuantizedModel q = gsq::l4q_quantized_model(model);
    for (const auto& [name, m] : q.quantized)
      for (std::int64_t g = 0; g < m.rows() * m.groups_per_row(); ++g) {
        REQUIRE(gsq::representable_in_f16(m.step_row(0)[g]));
        REQUIRE(gsq::representable_in_f16(m.offset_row(0)[g] - 8.0f * m.step_row(0)[g]));
      }
    gsq::test::TempDir dir;
    const gsq::LlamaWeights w = q.dequantized();
    const gsq::GgufExportReport r = gsq::write_gguf_llama(dir / "l4q.gguf", w, toy_vocab(c.vocab_size), {}, &q.quantized);
    CHECK(r.l4q_tensors == 7 * c.n_layers);
    CHECK(r.notes.empty());
    CHECK(r.l4q_max_abs_diff == 0.0);
    gsq::LlamaTensors t;
    for (const auto& [name, x] : gsq::read_gguf_llama(dir / "l4q.gguf").tensors) t.emplace(name, x.clone());
    gsq::Llama reloaded(gsq::read_gguf_llama(dir / "l4q.gguf").config, std::move(t), {});
    CHECK(max_abs_diff(reloaded.forward(kIds, 2), model.forward(kIds, 2)) < 1e-4);
  }

  TEST_CASE("gguf: other architectures and GPT-2 vocabularies are refused by name") {
    gsq::test::TempDir dir;
    {
      gsq::GgufWriter w(dir / "a.gguf");
      w.set("general.architecture", gsq::GgufValue::string("qwen2"));
      w.finish();
    }
    auto e = gsq::test::expect_io_error([&] { (void)gsq::load_llama(dir / "a.gguf"); });
    REQUIRE(e);
    CHECK(e->code() == gsq::ErrorCode::kUnsupported);
    CHECK(std::string(e->what()).find("qwen2") != std::string::npos);
    {
      gsq::GgufWriter w(dir / "t.gguf");
      w.set("tokenizer.ggml.model", gsq::GgufValue::string("gpt2"));
      w.finish();
    }
    e = gsq::test::expect_io_error([&] { (void)gsq::load_tokenizer(dir / "t.gguf"); });
    REQUIRE(e);
    CHECK(e->code() == gsq::ErrorCode::kUnsupported);
  }

  TEST_CASE("gguf: stories260K exports bit-exact F32 weights and its tokenizer [data]") {
    const auto model = gsq::test::data_file("models/stories260K/stories260K.bin");
    const auto tok = gsq::test::data_file("models/stories260K/tok512.bin");
    if (!model || !tok) return;
    gsq::test::TempDir dir;
    const gsq::LlamaWeights w = gsq::load_llama(*model);
    const auto tokenizer = gsq::load_tokenizer(*tok);
    gsq::write_gguf_llama(dir / "s.gguf", w, gsq::gguf_vocab(*tokenizer, *tok));
    const gsq::LlamaWeights back = gsq::load_llama(dir / "s.gguf");
    REQUIRE(back.tensors.size() == w.tensors.size());
    for (const auto& [name, t] : w.tensors) {
      const std::string& tensor = name;  // clang 14 cannot capture a structured binding
      CAPTURE(tensor);
      CHECK(gsq::test::bitwise_equal(back.at(name).data(), t.data(), t.numel()));
    }
    const auto tok2 = gsq::load_tokenizer(dir / "s.gguf");
    const std::string text = "Once upon a time, there was a little girl named Lily.\nShe liked caf\xC3\xA9s!";
    CHECK(tok2->encode(text, true, true) == tokenizer->encode(text, true, true));
    const std::vector<std::int32_t> ids = tokenizer->encode(text, true, false);
    CHECK(tok2->decode(ids) == tokenizer->decode(ids));
    CHECK(tok2->vocab_size() == 512);
  }

  TEST_CASE("gguf: TinyStories-656K (rotate_half) reloads with its logits [data]") {
    const auto dir656 = gsq::test::data_file("models/tinystories-656K");
    if (!dir656) return;
    gsq::test::TempDir dir;
    const gsq::LlamaWeights w = gsq::load_llama(*dir656);
    const auto tokenizer = gsq::load_tokenizer(*dir656);
    const gsq::GgufVocab vocab = gsq::gguf_vocab(*tokenizer, *dir656);
    CHECK(vocab.types[1] == 3);  // <|start_story|> is a control token
    std::int64_t scored = 0;
    for (float s : vocab.scores) scored += s < 0.0f ? 1 : 0;
    CHECK(scored >= 1900);  // nearly every piece is made by a merge
    gsq::write_gguf_llama(dir / "t.gguf", w, vocab);
    const gsq::LlamaWeights back = gsq::load_llama(dir / "t.gguf");
    CHECK(back.config.norm_eps == w.config.norm_eps);
    auto logits = [&](const gsq::LlamaWeights& x) {
      gsq::LlamaTensors t;
      for (const auto& [name, v] : x.tensors) t.emplace(name, v.clone());
      gsq::Llama m(x.config, std::move(t), {});
      const std::vector<std::int32_t> ids = tokenizer->encode("Once upon a time, there was a dog.", true, false);
      return m.forward(ids, 1);
    };
    CHECK(max_abs_diff(logits(back), logits(w)) < 1e-4);
  }
}
