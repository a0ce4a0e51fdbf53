// Deterministic fuzz replay: every parser gets the fuzz seed corpus plus systematic
// mutations of it (truncation at every length, byte flips, hostile sizes written over
// each field, odd numbers spliced into JSON) and must either accept the input or throw
// gsq::Error. Runs in every build, sanitizers included (label `fuzz`); fuzz/run.sh does
// the open-ended, coverage-guided search with the same targets and seeds.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "../../fuzz/fuzz_seeds.hpp"
#include "../../fuzz/fuzz_targets.hpp"
#include "support/test_support.hpp"

namespace {

std::optional<std::filesystem::path> data_dir() {
  const std::filesystem::path p(GSQ_DATA_DIR);
  if (std::filesystem::is_directory(p)) return p;
  MESSAGE("SKIPPED (partly): " << p.string() << " is absent; replaying the hand-made seeds only");
  return std::nullopt;
}

/// Calls f(description, bytes) for the seed and each of its mutations.
template <class F>
void for_each_mutation(const std::vector<std::uint8_t>& seed, F&& f) {
  const std::size_t n = seed.size();
  const std::size_t stride = n <= 1024 ? 1 : 3;  // every position for small seeds
  f("seed", seed);
  for (std::size_t len = 0; len < n; len += (len < 256 ? 1 : stride))
    f("truncated to " + std::to_string(len), std::vector<std::uint8_t>(seed.begin(), seed.begin() + static_cast<std::ptrdiff_t>(len)));
  std::vector<std::uint8_t> m = seed;
  for (std::size_t i = 0; i < n; i += stride) {
    for (std::uint8_t x : {std::uint8_t{0xFF}, std::uint8_t{0x01}}) {
      m[i] ^= x;
      f("byte " + std::to_string(i) + " xor " + std::to_string(x), m);
      m[i] ^= x;
    }
  }
  for (std::size_t i = 0; i + 4 <= n; i += 4 * stride) {
    for (std::uint32_t v : {0x7FFFFFFFu, 0x80000000u, 0xFFFFFFFFu, 0x40000000u, 0u}) {
      std::memcpy(m.data() + i, &v, 4);
      f("u32 " + std::to_string(v) + " at " + std::to_string(i), m);
    }
    std::memcpy(m.data() + i, seed.data() + i, 4);
  }
  for (std::size_t i = 0; i + 8 <= n; i += 8 * stride) {
    for (std::uint64_t v : {~std::uint64_t{0}, std::uint64_t{1} << 62, std::uint64_t{1} << 31}) {
      std::memcpy(m.data() + i, &v, 8);
      f("u64 " + std::to_string(v) + " at " + std::to_string(i), m);
    }
    std::memcpy(m.data() + i, seed.data() + i, 8);
  }
  // JSON: each number replaced by extreme ones.
  const std::string_view text(reinterpret_cast<const char*>(seed.data()), n);
  for (std::size_t i = 0; i < n;) {
    if (!(text[i] >= '0' && text[i] <= '9')) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < n && ((text[j] >= '0' && text[j] <= '9') || text[j] == '.' || text[j] == 'e' || text[j] == '-')) ++j;
    for (const char* v : {"99999999999999999999", "-1", "1e308", "0", "4294967296", "2147483648", "1.5", "-9223372036854775808"}) {
      std::string s(text.substr(0, i));
      s += v;
      s += text.substr(j);
      f(std::string("number at ") + std::to_string(i) + " -> " + v, std::vector<std::uint8_t>(s.begin(), s.end()));
    }
    i = j;
  }
  std::vector<std::uint8_t> twice = seed;
  twice.insert(twice.end(), seed.begin(), seed.end());
  f("doubled", twice);
  std::vector<std::uint8_t> nul = seed;
  nul.push_back(0);
  f("trailing NUL", nul);
}

void replay(std::string_view target_name) {
  const gsq::fuzz::Target* target = gsq::fuzz::find_target(target_name);
  REQUIRE(target != nullptr);
  const auto seeds = gsq::fuzz::make_seeds(target_name, data_dir());
  REQUIRE(!seeds.empty());
  std::size_t runs = 0, accepted = 0, failures = 0;
  for (const gsq::fuzz::Seed& seed : seeds) {
    CAPTURE(seed.name);
    CHECK(seed.bytes.size() < 4096);
    CHECK((target->run(seed.bytes) == gsq::fuzz::Outcome::kAccepted) == seed.valid);
    for_each_mutation(seed.bytes, [&](const std::string& what, const std::vector<std::uint8_t>& bytes) {
      ++runs;
      try {
        accepted += target->run(bytes) == gsq::fuzz::Outcome::kAccepted ? 1 : 0;
      } catch (const std::exception& e) {  // not a gsq::Error: a bug
        if (++failures <= 10) FAIL_CHECK(seed.name << ", " << what << ": " << e.what());
      }
    });
  }
  CHECK(failures == 0);
  MESSAGE(target_name << ": " << seeds.size() << " seeds, " << runs << " inputs, " << accepted << " accepted, "
                      << runs - accepted - failures << " rejected with gsq::Error");
}

}  // namespace

TEST_SUITE("io") {
  // The `fuzz` suite decorator gives these the ctest label `fuzz`.
  TEST_CASE("fuzz replay: safetensors seeds and mutations parse or throw gsq::Error" * doctest::test_suite("fuzz")) {
    replay("safetensors");
  }
  TEST_CASE("fuzz replay: llama2c seeds and mutations parse or throw gsq::Error" * doctest::test_suite("fuzz")) {
    replay("llama2c");
  }
  TEST_CASE("fuzz replay: config.json seeds and mutations parse or throw gsq::Error" * doctest::test_suite("fuzz")) {
    replay("hf_config");
  }
  TEST_CASE("fuzz replay: llama2c tokenizer seeds and mutations parse or throw gsq::Error" *
            doctest::test_suite("fuzz")) {
    replay("llama2c_tokenizer");
  }
  TEST_CASE("fuzz replay: tokenizer.json seeds and mutations parse or throw gsq::Error" * doctest::test_suite("fuzz")) {
    replay("hf_tokenizer");
  }
  TEST_CASE("fuzz replay: GGUF seeds and mutations parse or throw gsq::Error" * doctest::test_suite("fuzz")) {
    replay("gguf");
  }
  TEST_CASE("fuzz replay: adapter_config.json seeds and mutations parse or throw gsq::Error" *
            doctest::test_suite("fuzz")) {
    replay("peft_adapter");
  }
  TEST_CASE("fuzz replay: checkpoint directory seeds and mutations load or throw gsq::Error" *
            doctest::test_suite("fuzz")) {
    replay("checkpoint");
  }
}
