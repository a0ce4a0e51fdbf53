// safetensors: reading real and hand-made files, hostile headers, writer round trips.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "gsq/io/safetensors.hpp"
#include "io/io_test_util.hpp"
#include "support/test_support.hpp"

namespace {

using gsq::test::append;
using gsq::test::expect_io_error;

std::vector<std::uint8_t> make_file(const std::string& header, const std::vector<std::uint8_t>& data) {
  std::vector<std::uint8_t> out;
  append(out, static_cast<std::uint64_t>(header.size()));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

std::vector<std::uint8_t> floats_bytes(const std::vector<float>& v) {
  std::vector<std::uint8_t> out(v.size() * 4);
  if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

gsq::SafetensorsFile parse(const std::vector<std::uint8_t>& bytes) {
  return gsq::SafetensorsFile::parse(gsq::MappedFile::from_bytes(bytes, "mem.safetensors"));
}

// Two F32 tensors a [2] and b [1,2] stored back to back, plus metadata.
const std::string kGoodHeader =
    R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
    R"("b":{"dtype":"F32","shape":[1,2],"data_offsets":[8,16]}})";
const std::vector<float> kGoodData = {1.0f, -2.0f, 3.5f, 0.25f};

}  // namespace

TEST_SUITE("io") {
  TEST_CASE("safetensors: a hand-made file parses with values shapes and metadata") {
    const gsq::SafetensorsFile st = parse(make_file(kGoodHeader, floats_bytes(kGoodData)));
    REQUIRE(st.entries().size() == 2);
    CHECK(st.metadata().at("format") == "pt");
    CHECK(st.at("b").shape == std::vector<std::int64_t>{1, 2});
    CHECK(st.at("a").begin == 8 + static_cast<std::int64_t>(kGoodHeader.size()));
    const gsq::Tensor<float> b = st.to_float("b");
    CHECK(b.rank() == 2);
    CHECK(b[0] == 3.5f);
    CHECK(b[1] == 0.25f);
    CHECK(st.find("c") == nullptr);
    CHECK(expect_io_error([&] { (void)st.at("c"); }).has_value());
  }

  TEST_CASE("safetensors: F16 and BF16 convert to float exactly") {
    // F16: 1.0, -2.0, 65504 (max), 2^-24 (smallest subnormal), 2^-14 (smallest normal), -0, inf
    const std::vector<std::uint16_t> f16 = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x0400, 0x8000, 0x7C00, 0x03FF};
    const std::vector<float> f16_want = {1.0f, -2.0f, 65504.0f, std::ldexp(1.0f, -24), std::ldexp(1.0f, -14),
                                         -0.0f, std::numeric_limits<float>::infinity(),
                                         std::ldexp(1023.0f, -24)};
    for (std::size_t i = 0; i < f16.size(); ++i) {
      CAPTURE(i);
      const float got = gsq::f16_to_float(f16[i]);
      CHECK(std::bit_cast<std::uint32_t>(got) == std::bit_cast<std::uint32_t>(f16_want[i]));
    }
    CHECK(std::isnan(gsq::f16_to_float(0x7E00)));
    // BF16 in a file, F16 in the same file.
    std::vector<std::uint8_t> data;
    for (std::uint16_t h : {std::uint16_t{0x3F80}, std::uint16_t{0xC0A0}}) append(data, h);  // 1, -5
    for (std::uint16_t h : {std::uint16_t{0x3C00}, std::uint16_t{0x0001}}) append(data, h);
    const std::string header =
        R"({"x":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"y":{"dtype":"F16","shape":[2],"data_offsets":[4,8]}})";
    const gsq::SafetensorsFile st = parse(make_file(header, data));
    const gsq::Tensor<float> x = st.to_float("x"), y = st.to_float("y");
    CHECK(x[0] == 1.0f);
    CHECK(x[1] == -5.0f);
    CHECK(y[0] == 1.0f);
    CHECK(y[1] == std::ldexp(1.0f, -24));
  }

  TEST_CASE("safetensors: bf16 export rounds to nearest even and keeps NaN") {
    CHECK(gsq::float_to_bf16(1.0f) == 0x3F80);
    CHECK(gsq::float_to_bf16(std::bit_cast<float>(0x3F808000u)) == 0x3F80);  // tie → even
    CHECK(gsq::float_to_bf16(std::bit_cast<float>(0x3F818000u)) == 0x3F82);  // tie → even (up)
    CHECK(gsq::float_to_bf16(std::bit_cast<float>(0x3F808001u)) == 0x3F81);
    CHECK(gsq::float_to_bf16(std::bit_cast<float>(0x7F7FFFFFu)) == 0x7F80);  // overflow → inf
    const std::uint16_t nan = gsq::float_to_bf16(std::bit_cast<float>(0x7F800001u));
    CHECK(std::isnan(gsq::bf16_to_float(nan)));
    // Every bf16 survives a round trip through float.
    for (std::uint32_t h = 0; h < 0x10000; ++h) {
      const float f = gsq::bf16_to_float(static_cast<std::uint16_t>(h));
      if (!std::isnan(f)) REQUIRE(gsq::float_to_bf16(f) == h);
    }
  }

  TEST_CASE("safetensors: every truncation of a valid file is an IoError with an offset") {
    const std::vector<std::uint8_t> good = make_file(kGoodHeader, floats_bytes(kGoodData));
    for (std::size_t n = 0; n < good.size(); ++n) {
      CAPTURE(n);
      const std::vector<std::uint8_t> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
      const auto e = expect_io_error([&] { (void)parse(cut); });
      REQUIRE(e.has_value());
      CHECK(e->file() == "mem.safetensors");
      CHECK(e->offset() >= 0);
      CHECK(e->offset() <= static_cast<std::int64_t>(n));
    }
  }

  TEST_CASE("safetensors: hostile headers are rejected with the offending offset") {
    const std::vector<std::uint8_t> data = floats_bytes(kGoodData);
    struct Case {
      const char* what;
      std::string header;
      gsq::ErrorCode code;
    };
    const std::vector<Case> cases = {
        {"duplicate key", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", gsq::ErrorCode::kCorrupt},
        {"duplicate key spelled with an escape", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"\u0061":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", gsq::ErrorCode::kCorrupt},
        {"overlap", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[3],"data_offsets":[4,16]}})", gsq::ErrorCode::kCorrupt},
        {"gap", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", gsq::ErrorCode::kCorrupt},
        {"trailing bytes", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", gsq::ErrorCode::kCorrupt},
        {"past the end", R"({"a":{"dtype":"F32","shape":[6],"data_offsets":[0,24]}})", gsq::ErrorCode::kTruncated},
        {"size disagrees with shape", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", gsq::ErrorCode::kCorrupt},
        {"unknown dtype", R"({"a":{"dtype":"F33","shape":[4],"data_offsets":[0,16]}})", gsq::ErrorCode::kCorrupt},
        {"negative extent", R"({"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", gsq::ErrorCode::kCorrupt},
        {"fractional extent", R"({"a":{"dtype":"F32","shape":[4.0],"data_offsets":[0,16]}})", gsq::ErrorCode::kCorrupt},
        {"shape overflows", R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}})", gsq::ErrorCode::kCorrupt},
        {"huge offsets", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[18446744073709551600,18446744073709551615]}})", gsq::ErrorCode::kCorrupt},
        {"reversed offsets", R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[16,0]}})", gsq::ErrorCode::kCorrupt},
        {"metadata not strings", R"({"__metadata__":{"n":1},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", gsq::ErrorCode::kCorrupt},
        {"not an object", R"([1,2,3])", gsq::ErrorCode::kCorrupt},
        {"bad JSON", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]})", gsq::ErrorCode::kCorrupt},
        {"deep nesting", std::string(200, '[') + std::string(200, ']'), gsq::ErrorCode::kCorrupt},
    };
    for (const Case& c : cases) {
      CAPTURE(c.what);
      const auto e = expect_io_error([&] { (void)parse(make_file(c.header, data)); });
      REQUIRE(e.has_value());
      CHECK(e->code() == c.code);
      CHECK(e->offset() >= 0);
      CHECK(std::string(e->what()).find("mem.safetensors at byte") != std::string::npos);
    }
    // The duplicate is reported where the second key starts.
    const auto dup = expect_io_error([&] { (void)parse(make_file(cases[0].header, data)); });
    REQUIRE(dup.has_value());
    CHECK(dup->offset() == 8 + static_cast<std::int64_t>(cases[0].header.find("\"a\"", 5)));
  }

  TEST_CASE("safetensors: an absurd header length fails before any allocation") {
    std::vector<std::uint8_t> bytes;
    append(bytes, std::uint64_t{1} << 62);
    bytes.push_back('{');
    const auto e = expect_io_error([&] { (void)parse(bytes); });
    REQUIRE(e.has_value());
    CHECK(e->offset() == 0);
    std::vector<std::uint8_t> big;
    append(big, std::uint64_t{50} << 20);  // under the limit but beyond the file
    big.push_back('{');
    const auto t = expect_io_error([&] { (void)parse(big); });
    REQUIRE(t.has_value());
    CHECK(t->code() == gsq::ErrorCode::kTruncated);
    CHECK(t->offset() == 8);
  }

  TEST_CASE("safetensors: zero-size and scalar tensors are valid") {
    const std::string header =
        R"({"e":{"dtype":"F32","shape":[0,5],"data_offsets":[0,0]},"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})";
    const gsq::SafetensorsFile st = parse(make_file(header, floats_bytes({7.0f})));
    CHECK(st.at("e").numel() == 0);
    const gsq::Tensor<float> s = st.to_float("s");
    CHECK(s.numel() == 1);
    CHECK(s[0] == 7.0f);
  }

  TEST_CASE("safetensors: integer tensors are listed but not read as float") {
    const std::string header = R"({"i":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})";
    const gsq::SafetensorsFile st = parse(make_file(header, floats_bytes(kGoodData)));
    CHECK(st.at("i").dtype == gsq::DType::kI64);
    const auto e = expect_io_error([&] { (void)st.to_float("i"); });
    REQUIRE(e.has_value());
    CHECK(e->offset() == st.at("i").begin);
  }

  TEST_CASE("safetensors: F32 write then read is bitwise and sorted") {
    gsq::test::TempDir dir;
    std::map<std::string, gsq::Tensor<float>> tensors;
    tensors.emplace("z.weight", gsq::test::random_matrix(7, 5, 1));
    tensors.emplace("a.bias", gsq::test::random_matrix(1, 9, 2));
    gsq::Tensor<float> special({4});
    special[0] = -0.0f;
    special[1] = std::numeric_limits<float>::infinity();
    special[2] = std::bit_cast<float>(0x7FC01234u);  // NaN with payload
    special[3] = std::numeric_limits<float>::denorm_min();
    tensors.emplace("m.special", std::move(special));
    const std::map<std::string, std::string> meta = {{"format", "pt"}, {"gsq", "test"}};
    gsq::write_safetensors(dir / "t.safetensors", tensors, meta);
    CHECK(dir.entries() == 1);  // no temporary left behind
    const gsq::SafetensorsFile st = gsq::SafetensorsFile::open(dir / "t.safetensors");
    CHECK(st.metadata() == meta);
    CHECK(st.data_offset() % 8 == 0);
    REQUIRE(st.entries().size() == tensors.size());
    std::int64_t previous_end = st.data_offset();
    for (const gsq::SafetensorsEntry& e : st.entries()) {  // name order = file order
      CHECK(e.begin == previous_end);
      previous_end = e.end;
      const gsq::Tensor<float>& want = tensors.at(e.name);
      CHECK(e.shape == gsq::tensor_shape(want));
      const gsq::Tensor<float> got = st.to_float(e);
      CHECK(gsq::test::bitwise_equal(got.data(), want.data(), want.numel()));
    }
  }

  TEST_CASE("safetensors: BF16 write rounds once and reads back bitwise") {
    gsq::test::TempDir dir;
    std::map<std::string, gsq::Tensor<float>> tensors;
    tensors.emplace("w", gsq::test::random_matrix(33, 17, 3));
    gsq::write_safetensors(dir / "b.safetensors", tensors, {}, gsq::DType::kBF16);
    const gsq::SafetensorsFile st = gsq::SafetensorsFile::open(dir / "b.safetensors");
    CHECK(st.at("w").dtype == gsq::DType::kBF16);
    CHECK(st.at("w").bytes() == 33 * 17 * 2);
    const gsq::Tensor<float> got = st.to_float("w");
    const gsq::Tensor<float>& w = tensors.at("w");
    for (std::int64_t i = 0; i < w.numel(); ++i)
      REQUIRE(std::bit_cast<std::uint32_t>(got[i]) ==
              std::bit_cast<std::uint32_t>(gsq::bf16_to_float(gsq::float_to_bf16(w[i]))));
    // bf16-exact values survive a second BF16 round trip unchanged.
    std::map<std::string, gsq::Tensor<float>> again;
    again.emplace("w", got.clone());
    gsq::write_safetensors(dir / "c.safetensors", again, {}, gsq::DType::kBF16);
    const gsq::Tensor<float> got2 = gsq::SafetensorsFile::open(dir / "c.safetensors").to_float("w");
    CHECK(gsq::test::bitwise_equal(got2.data(), got.data(), got.numel()));
  }

  TEST_CASE("safetensors: the writer refuses bad requests") {
    gsq::test::TempDir dir;
    const std::vector<float> v = {1, 2, 3};
    CHECK_THROWS_AS(gsq::write_safetensors(dir / "x.safetensors", {{"a", {2, 2}, v}}), gsq::ShapeError);
    CHECK_THROWS_AS(gsq::write_safetensors(dir / "x.safetensors", {{"a", {3}, v}, {"a", {3}, v}}),
                    gsq::ConfigError);
    CHECK_THROWS_AS(gsq::write_safetensors(dir / "x.safetensors", {{"a", {3}, v}}, {}, gsq::DType::kF16),
                    gsq::ConfigError);
    CHECK_THROWS_AS(gsq::write_safetensors(dir / "no_such_dir" / "x.safetensors", {{"a", {3}, v}}),
                    gsq::IoError);
    CHECK(dir.entries() == 0);
  }

  TEST_CASE("safetensors: tinystories-656K model.safetensors header as the data README says") {
    const auto path = gsq::test::data_file("models/tinystories-656K/model.safetensors");
    if (!path) return;
    const gsq::SafetensorsFile st = gsq::SafetensorsFile::open(*path);
    CHECK(st.file_bytes() == 2626168);
    CHECK(st.header_bytes() == 2160);
    CHECK(st.entries().size() == 20);
    CHECK(st.metadata().at("model.embed_tokens.weight") == "lm_head.weight");
    CHECK(st.find("model.embed_tokens.weight") == nullptr);
    CHECK(st.at("lm_head.weight").shape == std::vector<std::int64_t>{2048, 128});
    CHECK(st.at("model.layers.1.self_attn.k_proj.weight").shape == std::vector<std::int64_t>{64, 128});
    CHECK(st.at("model.layers.0.mlp.down_proj.weight").shape == std::vector<std::int64_t>{128, 384});
    std::int64_t total = 0;
    for (const gsq::SafetensorsEntry& e : st.entries()) {
      CHECK(e.dtype == gsq::DType::kF32);
      total += e.numel();
    }
    CHECK(total == 656000);
    // "Every value is exactly representable in bf16 (low 16 bits zero)."
    const gsq::Tensor<float> head = st.to_float("lm_head.weight");
    bool all_bf16 = true;
    for (float f : head) all_bf16 = all_bf16 && (std::bit_cast<std::uint32_t>(f) & 0xFFFFu) == 0;
    CHECK(all_bf16);
  }

  TEST_CASE("safetensors: tinystories-656K rewritten as BF16 reads back bitwise") {
    const auto path = gsq::test::data_file("models/tinystories-656K/model.safetensors");
    if (!path) return;
    const gsq::SafetensorsFile st = gsq::SafetensorsFile::open(*path);
    std::map<std::string, gsq::Tensor<float>> tensors;
    for (const gsq::SafetensorsEntry& e : st.entries()) tensors.emplace(e.name, st.to_float(e));
    gsq::test::TempDir dir;
    gsq::write_safetensors(dir / "m.safetensors", tensors, st.metadata(), gsq::DType::kBF16);
    gsq::write_safetensors(dir / "f.safetensors", tensors, st.metadata(), gsq::DType::kF32);
    const gsq::SafetensorsFile b = gsq::SafetensorsFile::open(dir / "m.safetensors");
    const gsq::SafetensorsFile f = gsq::SafetensorsFile::open(dir / "f.safetensors");
    CHECK(b.file_bytes() < f.file_bytes() / 2 + 4096);
    CHECK(b.metadata() == st.metadata());
    for (const auto& kv : tensors) {
      const std::string& name = kv.first;  // a plain reference: CAPTURE captures it (clang 14)
      const gsq::Tensor<float>& t = kv.second;
      CAPTURE(name);
      const gsq::Tensor<float> back = b.to_float(name);
      CHECK(gsq::test::bitwise_equal(back.data(), t.data(), t.numel()));
      // The F32 copy's data section is byte-identical to the original's.
      const auto want = st.raw(st.at(name));
      const auto got = f.raw(f.at(name));
      CHECK(std::equal(want.begin(), want.end(), got.begin(), got.end()));
    }
  }
}
