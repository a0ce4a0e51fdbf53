#include <doctest/doctest.h>

#include <fstream>
#include <set>

#include "gsq/io/dataset.hpp"
#include "support/test_support.hpp"

namespace {

// One token per byte (+3), BOS 1, EOS 2: enough to check masks and windows exactly.
class ByteTokenizer final : public gsq::Tokenizer {
 public:
  std::vector<std::int32_t> encode(std::string_view text, bool bos, bool eos) const override {
    std::vector<std::int32_t> ids;
    if (bos) ids.push_back(1);
    for (unsigned char c : text) ids.push_back(c + 3);
    if (eos) ids.push_back(2);
    return ids;
  }
  std::string decode(std::span<const std::int32_t> ids) const override {
    std::string s;
    for (auto id : ids)
      if (id >= 3) s.push_back(static_cast<char>(id - 3));
    return s;
  }
  std::int32_t vocab_size() const noexcept override { return 259; }
  std::int32_t bos_id() const noexcept override { return 1; }
  std::int32_t eos_id() const noexcept override { return 2; }
  std::string_view piece(std::int32_t) const override { return {}; }
  std::string_view kind() const noexcept override { return "bytes"; }
};

}  // namespace

TEST_SUITE("io") {
  TEST_CASE("dataset: instruction examples count only the response and its EOS") {
    ByteTokenizer tok;
    gsq::data::InstructionItem item{"Say hi", "", "hi", ""};
    const auto ex = gsq::data::make_instruction_example(item, tok, 10000);
    const std::size_t prompt = gsq::data::alpaca_prompt(item).size() + 1;  // + BOS
    REQUIRE(ex.ids.size() == prompt + 3);                                   // "hi" + EOS
    CHECK(ex.counted() == 3);
    for (std::size_t t = 0; t < prompt; ++t) CHECK(ex.loss_mask[t] == 0);
    CHECK(ex.ids.back() == 2);
    // A window that ends inside the prompt leaves nothing to learn: dropped for training.
    CHECK(gsq::data::instruction_examples({item}, tok, 20).empty());
  }

  TEST_CASE("dataset: text windows predict every token after the first exactly once") {
    ByteTokenizer tok;
    const std::string text = "abcdefghijklmnopqrstuvwxyz";
    const auto examples = gsq::data::text_examples(text, tok, 8);
    std::int64_t counted = 0;
    for (const auto& ex : examples) counted += ex.counted();
    CHECK(counted == static_cast<std::int64_t>(text.size()));  // BOS + 26 ids: 26 predicted
    CHECK(examples.front().ids.size() == 9);
  }

  TEST_CASE("dataset: batches shift targets and pad with mask 0") {
    ByteTokenizer tok;
    const auto examples = gsq::data::text_examples("abcd", tok, 16);
    const auto b = gsq::data::make_batch({&examples[0]}, 6);
    CHECK(b.inputs == std::vector<std::int32_t>{1, 'a' + 3, 'b' + 3, 'c' + 3, 0, 0});
    CHECK(b.targets == std::vector<std::int32_t>{'a' + 3, 'b' + 3, 'c' + 3, 'd' + 3, 0, 0});
    CHECK(b.mask == std::vector<std::uint8_t>{1, 1, 1, 1, 0, 0});
  }

  TEST_CASE("dataset: the sampler visits a permutation per epoch and resumes from its cursor") {
    ByteTokenizer tok;
    std::vector<gsq::data::Example> examples;
    for (int i = 0; i < 10; ++i)
      examples.push_back(gsq::data::text_examples(std::string(1, static_cast<char>('a' + i)), tok, 4)[0]);
    gsq::data::BatchSampler a(examples, 3, 4, 7);
    std::vector<std::int32_t> first_epoch;
    for (int i = 0; i < 3; ++i) {
      const auto b = a.next();
      for (std::int64_t r = 0; r < 3; ++r) first_epoch.push_back(b.targets[static_cast<std::size_t>(r * 4)]);
    }
    CHECK(std::set<std::int32_t>(first_epoch.begin(), first_epoch.end()).size() == 9);  // no repeats
    const auto cursor = a.cursor();
    const auto expected = a.next();  // crosses into epoch 1
    gsq::data::BatchSampler b(examples, 3, 4, 7);
    b.seek(cursor);
    CHECK(b.next().targets == expected.targets);
  }

  TEST_CASE("dataset: the real Alpaca dev split loads") {
    auto path = gsq::test::data_file("alpaca/alpaca_dev.json");
    if (!path) return;
    const auto items = gsq::data::load_instruction_items(*path);
    CHECK(items.size() == 200);
    CHECK_FALSE(items[0].instruction.empty());
  }

  TEST_CASE("dataset: a malformed instruction file is an IoError") {
    const auto bad = std::filesystem::temp_directory_path() / "gsq_bad_instructions.json";
    { std::ofstream(bad) << R"([{"instruction": "x"}])"; }
    CHECK_THROWS_AS(gsq::data::load_instruction_items(bad), gsq::IoError);
    { std::ofstream(bad) << R"({"instruction": )"; }
    CHECK_THROWS_AS(gsq::data::load_instruction_items(bad), gsq::IoError);
    std::filesystem::remove(bad);
  }
}
