// Tokenizers: golden ids, naive-reference agreement, speed, round trips, corrupt files.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "gsq/core/rng.hpp"
#include "gsq/io/tokenizer_factory.hpp"
#include "io/io_test_util.hpp"
#include "support/test_support.hpp"

namespace {

using gsq::test::append;
using gsq::test::expect_io_error;

nlohmann::json load_json(const std::filesystem::path& p) { return nlohmann::json::parse(std::ifstream(p)); }

/// The first `bytes` bytes of `text` as Python's decode(errors="ignore") keeps them: an
/// incomplete character at the end is dropped.
std::string utf8_prefix(const std::string& text, std::size_t bytes) {
  std::string t = text.substr(0, bytes);
  std::size_t start = t.size();
  while (start > 0 && (static_cast<unsigned char>(t[start - 1]) & 0xC0) == 0x80) --start;
  if (start > 0) {
    const auto lead = static_cast<unsigned char>(t[start - 1]);
    const std::size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (t.size() - (start - 1) < need) t.resize(start - 1);
  }
  return t;
}

// run.c encode(), literally: O(n²) rescans, used as the reference for the fast path.
std::vector<std::int32_t> naive_llama2c_encode(const gsq::Llama2cTokenizer& tok, const std::string& text) {
  std::unordered_map<std::string, std::int32_t> lookup;
  for (std::int32_t i = tok.vocab_size() - 1; i >= 0; --i) lookup[std::string(tok.piece(i))] = i;
  auto find = [&](const std::string& s) {
    auto it = lookup.find(s);
    return it == lookup.end() ? -1 : it->second;
  };
  std::vector<std::int32_t> t = {1};
  if (!text.empty()) t.push_back(find(" "));
  std::string buf;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) buf.clear();
    buf += text[i];
    if (i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80 && buf.size() < 4) continue;
    const std::int32_t id = find(buf);
    if (id >= 0) {
      t.push_back(id);
    } else {
      for (char c : buf) t.push_back(static_cast<unsigned char>(c) + 3);
    }
    buf.clear();
  }
  while (true) {
    float best = -1e10f;
    std::int32_t best_id = -1;
    std::size_t best_at = 0;
    for (std::size_t i = 0; i + 1 < t.size(); ++i) {
      const std::int32_t id = find(std::string(tok.piece(t[i])) + std::string(tok.piece(t[i + 1])));
      if (id >= 0 && tok.score(id) > best) {
        best = tok.score(id);
        best_id = id;
        best_at = i;
      }
    }
    if (best_id < 0) break;
    t[best_at] = best_id;
    t.erase(t.begin() + static_cast<std::ptrdiff_t>(best_at) + 1);
  }
  return t;
}

// tokenizers' BPE by rank, literally (no added tokens in the text), from tokenizer.json.
std::vector<std::int32_t> naive_hf_encode(const nlohmann::json& j, const std::string& text) {
  std::unordered_map<std::string, std::int32_t> vocab;
  for (const auto& [k, v] : j["model"]["vocab"].items()) vocab[k] = v.get<std::int32_t>();
  std::unordered_map<std::string, std::int32_t> rank;
  std::int32_t r = 0;
  for (const auto& m : j["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    rank.emplace(s.substr(0, s.find(' ')) + '\x01' + s.substr(s.find(' ') + 1), r++);
  }
  std::string norm = text.empty() ? "" : "\xE2\x96\x81";
  for (char c : text) norm += c == ' ' ? std::string("\xE2\x96\x81") : std::string(1, c);
  std::vector<std::string> sym;
  bool unk = false;
  for (std::size_t i = 0; i < norm.size();) {
    std::size_t len = gsq::io::detail::utf8_char_length(norm, i);
    const std::string ch = norm.substr(i, len);
    i += len;
    if (vocab.count(ch) != 0) {
      if (unk) sym.push_back("<unk>");
      unk = false;
      sym.push_back(ch);
    } else {
      unk = true;  // fuse_unk
    }
  }
  if (unk) sym.push_back("<unk>");
  while (true) {
    std::int32_t best = std::numeric_limits<std::int32_t>::max();
    std::size_t at = 0;
    for (std::size_t i = 0; i + 1 < sym.size(); ++i) {
      auto it = rank.find(sym[i] + '\x01' + sym[i + 1]);
      if (it != rank.end() && it->second < best) {
        best = it->second;
        at = i;
      }
    }
    if (best == std::numeric_limits<std::int32_t>::max()) break;
    sym[at] += sym[at + 1];
    sym.erase(sym.begin() + static_cast<std::ptrdiff_t>(at) + 1);
  }
  std::vector<std::int32_t> ids = {1};
  for (const std::string& s : sym) ids.push_back(vocab.at(s));
  return ids;
}

/// Random snippets: pieces of `corpus` plus random printable / multi-byte / odd bytes.
std::vector<std::string> random_texts(const std::string& corpus, int count, std::uint64_t seed) {
  gsq::CounterRng rng(seed, 0);
  const std::vector<std::string> extra = {" ", "  ", "é", "€", "日本", "😀", "\xE2\x80", "\xFF", "\t", "\n\n", "#(", "<0x41>"};
  std::vector<std::string> out;
  for (int k = 0; k < count; ++k) {
    std::string s;
    const int parts = 1 + static_cast<int>(rng.next_u32() % 6);
    for (int p = 0; p < parts; ++p) {
      if (rng.next_u32() % 3 == 0) {
        s += extra[rng.next_u32() % extra.size()];
      } else {
        const std::size_t at = rng.next_u32() % (corpus.size() - 80);
        s += corpus.substr(at, 1 + rng.next_u32() % 60);
      }
    }
    out.push_back(s);
  }
  return out;
}

struct GoldenCase {
  const char* golden;
  const char* tokenizer;
};
const GoldenCase kGolden[] = {
    {"golden/stories260K.json", "models/stories260K/tok512.bin"},
    {"golden/tinystories-656K.json", "models/tinystories-656K/tokenizer.json"},
};

}  // namespace

TEST_SUITE("io") {
  TEST_CASE("tokenizer: golden prompt ids are reproduced and decode back") {
    for (const GoldenCase& gc : kGolden) {
      CAPTURE(gc.tokenizer);
      const auto gpath = gsq::test::data_file(gc.golden);
      const auto tpath = gsq::test::data_file(gc.tokenizer);
      if (!gpath || !tpath) continue;
      const auto tok = gsq::load_tokenizer(*tpath);
      const nlohmann::json g = load_json(*gpath);
      CHECK(tok->vocab_size() == g["config"]["vocab_size"].get<std::int32_t>());
      CHECK(tok->bos_id() == 1);
      CHECK(tok->eos_id() == 2);
      for (const auto& p : g["prompts"]) {
        const std::string text = p["text"].get<std::string>();
        CAPTURE(text);
        const std::vector<std::int32_t> ids = tok->encode(text, true, false);
        CHECK(ids == p["ids"].get<std::vector<std::int32_t>>());
        CHECK(tok->decode(ids) == p["decoded"].get<std::string>());
        CHECK(tok->decode(ids) == text);
        std::vector<std::int32_t> with_eos = tok->encode(text, true, true);
        CHECK(with_eos.back() == 2);
        with_eos.pop_back();
        CHECK(with_eos == ids);
      }
    }
  }

  TEST_CASE("tokenizer: the 20 KB perplexity text encodes to the golden ids") {
    const auto text_path = gsq::test::data_file("text/tinystories_val.txt");
    if (!text_path) return;
    const std::string corpus = gsq::test::read_text(*text_path);
    for (const GoldenCase& gc : kGolden) {
      CAPTURE(gc.tokenizer);
      const auto gpath = gsq::test::data_file(gc.golden);
      const auto tpath = gsq::test::data_file(gc.tokenizer);
      if (!gpath || !tpath) continue;
      const auto tok = gsq::load_tokenizer(*tpath);
      const nlohmann::json ppl = load_json(*gpath)["ppl_text"];
      const std::string text = utf8_prefix(corpus, ppl["bytes"].get<std::size_t>());
      const std::vector<std::int32_t> ids = tok->encode(text, true, false);
      const auto want = ppl["ids"].get<std::vector<std::int32_t>>();
      CHECK(ids.size() == ppl["n_ids"].get<std::size_t>());
      REQUIRE(ids.size() == want.size());
      std::size_t first_diff = ids.size();
      for (std::size_t i = 0; i < ids.size() && first_diff == ids.size(); ++i)
        if (ids[i] != want[i]) first_diff = i;
      CHECK(first_diff == ids.size());
    }
  }

  TEST_CASE("tokenizer: the whole 794 KB validation text encodes quickly and decodes back") {
    const auto text_path = gsq::test::data_file("text/tinystories_val.txt");
    if (!text_path) return;
    const std::string corpus = gsq::test::read_text(*text_path);
    REQUIRE(corpus.size() == 794375);
    for (const GoldenCase& gc : kGolden) {
      CAPTURE(gc.tokenizer);
      const auto tpath = gsq::test::data_file(gc.tokenizer);
      if (!tpath) continue;
      const auto tok = gsq::load_tokenizer(*tpath);
      const auto t0 = std::chrono::steady_clock::now();
      const std::vector<std::int32_t> ids = tok->encode(corpus, true, false);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      MESSAGE(gc.tokenizer << ": " << corpus.size() << " bytes -> " << ids.size() << " ids in " << seconds << " s");
      // An O(n^2) merge takes minutes here; the bound leaves room for sanitizer builds.
      CHECK(seconds < 10.0);
      CHECK(ids.size() > corpus.size() / 5);
      if (tok->kind() == "llama2.c") CHECK(tok->decode(ids) == corpus);  // byte fallback: lossless
      for (std::int32_t id : ids) REQUIRE((id >= 0 && id < tok->vocab_size()));
    }
  }

  TEST_CASE("tokenizer: llama2c fast merge equals the run.c rescan on random text") {
    const auto text_path = gsq::test::data_file("text/tinystories_val.txt");
    if (!text_path) return;
    const std::string corpus = gsq::test::read_text(*text_path);
    for (const char* file : {"models/stories260K/tok512.bin", "tokenizers/llama2_tokenizer.bin"}) {
      CAPTURE(file);
      const auto tpath = gsq::test::data_file(file);
      if (!tpath) continue;
      const auto tok = gsq::Llama2cTokenizer::open(*tpath);
      for (const std::string& text : random_texts(corpus, 60, 5)) {
        CAPTURE(text);
        const std::vector<std::int32_t> ids = tok->encode(text, true, false);
        REQUIRE(ids == naive_llama2c_encode(*tok, text));
        CHECK(tok->decode(ids) == text);
      }
    }
  }

  TEST_CASE("tokenizer: hf fast merge equals the rank rescan on random text") {
    const auto text_path = gsq::test::data_file("text/tinystories_val.txt");
    const auto tpath = gsq::test::data_file("models/tinystories-656K/tokenizer.json");
    if (!text_path || !tpath) return;
    const std::string corpus = gsq::test::read_text(*text_path);
    const auto tok = gsq::load_tokenizer(*tpath);
    const nlohmann::json j = load_json(*tpath);
    for (const std::string& text : random_texts(corpus, 60, 6)) {
      if (text.find("<|") != std::string::npos) continue;  // added tokens: not in the reference
      CAPTURE(text);
      REQUIRE(tok->encode(text, true, false) == naive_hf_encode(j, text));
    }
  }

  TEST_CASE("tokenizer: llama2_tokenizer.bin has the Llama 2 vocabulary") {
    const auto tpath = gsq::test::data_file("tokenizers/llama2_tokenizer.bin");
    if (!tpath) return;
    const auto tok = gsq::Llama2cTokenizer::open(*tpath);
    CHECK(tok->vocab_size() == 32000);
    CHECK(tok->max_token_length() == 27);
    CHECK(tok->piece(0) == "<unk>");
    CHECK(tok->piece(1) == "\n<s>\n");
    CHECK(tok->piece(3) == "<0x00>");
    CHECK(tok->piece(258) == "<0xFF>");
    CHECK(tok->piece(259) == "  ");
    CHECK(tok->score(259) == -1e9f);
    const std::string text = "Hello world! Grüße, 日本語 🦙";
    const std::vector<std::int32_t> ids = tok->encode(text, true, true);
    CHECK(ids.front() == 1);
    CHECK(ids.back() == 2);
    CHECK(tok->decode(ids) == text);
  }

  TEST_CASE("tokenizer: edge inputs") {
    const auto p260 = gsq::test::data_file("models/stories260K/tok512.bin");
    const auto p656 = gsq::test::data_file("models/tinystories-656K/tokenizer.json");
    if (!p260 || !p656) return;
    const auto a = gsq::load_tokenizer(*p260);
    const auto b = gsq::load_tokenizer(*p656);
    CHECK(a->kind() == "llama2.c");
    CHECK(b->kind() == "huggingface-bpe");
    for (const auto* tok : {a.get(), b.get()}) {
      CAPTURE(tok->kind());
      CHECK(tok->encode("", true, false) == std::vector<std::int32_t>{1});
      CHECK(tok->encode("", false, true) == std::vector<std::int32_t>{2});
      CHECK(tok->encode("", false, false).empty());
      CHECK(tok->decode({}).empty());
      CHECK_THROWS_AS(tok->decode(std::vector<std::int32_t>{tok->vocab_size()}), gsq::ShapeError);
      CHECK_THROWS_AS(tok->decode(std::vector<std::int32_t>{-1}), gsq::ShapeError);
      // Hostile text: NULs, broken UTF-8, long continuation runs.
      const std::string odd = std::string("a\0b", 3) + "\x80\x80\x80\x80\x80\x80\xC3" + "\xF0\x9F";
      const std::vector<std::int32_t> ids = tok->encode(odd, true, false);
      for (std::int32_t id : ids) CHECK((id >= 0 && id < tok->vocab_size()));
      (void)tok->decode(ids);
    }
    CHECK(a->decode(a->encode(std::string("a\0b\x80\x80\x80\x80\x80\xC3", 9), true, false)) ==
          std::string("a\0b\x80\x80\x80\x80\x80\xC3", 9));
    // llama2.c: characters outside the vocabulary fall back to bytes and decode back.
    const std::vector<std::int32_t> euro = a->encode("€", false, false);
    CHECK(euro.size() >= 2);
    CHECK(a->decode(euro) == " €");  // no BOS: the dummy-prefix space stays (run.c)
    // HF: characters outside the vocabulary become one fused <unk>.
    const std::vector<std::int32_t> unk = b->encode("a #(/ b", false, false);
    CHECK(std::count(unk.begin(), unk.end(), 0) == 1);
    CHECK(b->encode("#", false, false) == std::vector<std::int32_t>{80, 0});  // "▁" + <unk>
  }

  TEST_CASE("tokenizer: every truncation of tok512.bin is an IoError or a shorter vocabulary") {
    const auto path = gsq::test::data_file("models/stories260K/tok512.bin");
    if (!path) return;
    const std::vector<std::uint8_t> good = gsq::test::read_bytes(*path);
    // Entry ends: a file cut exactly there is a valid, smaller tokenizer.
    std::map<std::size_t, std::int32_t> tokens_at_end;
    for (std::size_t at = 4, n = 0; at + 8 <= good.size(); ) {
      std::int32_t len;
      std::memcpy(&len, good.data() + at + 4, 4);
      at += 8 + static_cast<std::size_t>(len);
      tokens_at_end[at] = static_cast<std::int32_t>(++n);
    }
    CHECK(tokens_at_end.at(good.size()) == 512);
    for (std::size_t n = 0; n < good.size(); ++n) {
      const std::vector<std::uint8_t> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
      const gsq::MappedFile f = gsq::MappedFile::from_bytes(cut, "tok.bin");
      try {
        const auto tok = gsq::Llama2cTokenizer::parse(f);
        CAPTURE(n);
        REQUIRE(tokens_at_end.count(n) == 1);
        CHECK(tok->vocab_size() == tokens_at_end.at(n));
        CHECK(tok->vocab_size() >= 3);
      } catch (const gsq::IoError& e) {
        if (e.offset() < 0 || e.offset() > static_cast<std::int64_t>(n)) {
          CAPTURE(n);
          FAIL_CHECK("offset " << e.offset() << " outside the file");
        }
      }
    }
  }

  TEST_CASE("tokenizer: corrupt llama2c tokenizer files name the offset") {
    std::vector<std::uint8_t> base;
    append(base, std::int32_t{4});
    for (const char* s : {"<unk>", "\n<s>\n", "</s>", "ab"}) {
      append(base, 0.0f);
      append(base, static_cast<std::int32_t>(std::strlen(s) > 4 ? 4 : std::strlen(s)));
      base.insert(base.end(), s, s + (std::strlen(s) > 4 ? 4 : std::strlen(s)));
    }
    CHECK(gsq::Llama2cTokenizer::parse(gsq::MappedFile::from_bytes(base, "t"))->vocab_size() == 4);
    auto with_i32 = [&](std::size_t at, std::int32_t v) {
      std::vector<std::uint8_t> b = base;
      std::memcpy(b.data() + at, &v, 4);
      return b;
    };
    struct Case {
      std::vector<std::uint8_t> bytes;
      std::int64_t offset;
    };
    const std::vector<Case> cases = {
        {with_i32(0, 0), 0},
        {with_i32(0, -1), 0},
        {with_i32(0, 0x7FFFFFFF), 0},
        {with_i32(8, -1), 8},           // first token's length
        {with_i32(8, 5), 8},            // longer than max_token_length
        {with_i32(8, 0x7FFFFFFF), 8},
        {std::vector<std::uint8_t>(base.begin(), base.begin() + 4), 4},
    };
    for (const Case& c : cases) {
      const auto e = expect_io_error([&] { (void)gsq::Llama2cTokenizer::parse(gsq::MappedFile::from_bytes(c.bytes, "t")); });
      REQUIRE(e.has_value());
      CHECK(e->offset() == c.offset);
    }
  }

  TEST_CASE("tokenizer: corrupt or unsupported tokenizer.json files are IoErrors") {
    const nlohmann::json good = {
        {"model",
         {{"type", "BPE"},
          {"vocab", {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}, {"a", 3}, {"b", 4}, {"ab", 5}, {"\xE2\x96\x81", 6}}},
          {"merges", {"a b"}},
          {"unk_token", "<unk>"},
          {"byte_fallback", false},
          {"fuse_unk", true}}},
        {"added_tokens", {{{"id", 1}, {"content", "<s>"}, {"special", true}},
                          {{"id", 2}, {"content", "</s>"}, {"special", true}, {"normalized", true}}}},
        {"normalizer", {{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}}, {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}}}}},
        {"pre_tokenizer", nullptr},
        {"decoder", {{"type", "Sequence"}, {"decoders", {{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}}, {{"type", "Fuse"}}, {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
    };
    auto parse = [](const nlohmann::json& j) {
      const std::string s = j.dump();
      return gsq::parse_tokenizer(gsq::MappedFile::from_bytes(std::vector<std::uint8_t>(s.begin(), s.end()), "tokenizer.json"));
    };
    const auto tok = parse(good);
    CHECK(tok->kind() == "huggingface-bpe");
    CHECK(tok->encode("ab ba", true, true) == std::vector<std::int32_t>{1, 6, 5, 6, 4, 3, 2});  // "<s>" found by name
    CHECK(tok->decode(tok->encode("ab ba", true, true)) == "ab ba");
    // "<s>" is matched in the raw text; "</s>" (normalized) by its normalized form "▁</s>".
    CHECK(tok->encode("a<s>b", false, false) == std::vector<std::int32_t>{6, 3, 1, 6, 4});
    CHECK(tok->encode("a </s>", false, false) == std::vector<std::int32_t>{6, 3, 2});
    CHECK(tok->encode("a</s>", false, false) == std::vector<std::int32_t>{6, 3, 0});

    struct Case {
      const char* what;
      nlohmann::json::json_pointer ptr;
      nlohmann::json value;
    };
    using P = nlohmann::json::json_pointer;
    const std::vector<Case> cases = {
        {"merge with an unknown token", P("/model/merges/0"), "a c"},
        {"merge without a space", P("/model/merges/0"), "ab"},
        {"merge result missing", P("/model/merges/0"), "b a"},
        {"id used twice", P("/model/vocab/b"), 3},
        {"id gap", P("/model/vocab/b"), 40},
        {"huge id", P("/model/vocab/b"), 4294967296LL},
        {"negative id", P("/model/vocab/b"), -1},
        {"vocab not an object", P("/model/vocab"), nlohmann::json::array()},
        {"unknown unk token", P("/model/unk_token"), "<nope>"},
        {"model type", P("/model/type"), "WordPiece"},
        {"normalizer type", P("/normalizer/type"), "NFKC"},
        {"regex replace", P("/normalizer/normalizers/1/pattern"), {{"Regex", "\\s"}}},
        {"pre-tokenizer", P("/pre_tokenizer"), {{"type", "Metaspace"}}},
        {"decoder type", P("/decoder/type"), "WordPiece"},
        {"strip content", P("/decoder/decoders/2/content"), "ab"},
        {"added token id gap", P("/added_tokens/0/id"), 100},
        {"added token empty", P("/added_tokens/0/content"), ""},
        {"post processor type", P("/post_processor"), {{"type", "BertProcessing"}}},
        {"dropout", P("/model/dropout"), 0.1},
    };
    for (const Case& c : cases) {
      CAPTURE(c.what);
      nlohmann::json j = good;
      j[c.ptr] = c.value;
      const auto e = expect_io_error([&] { (void)parse(j); });
      REQUIRE(e.has_value());
      CHECK(e->file() == "tokenizer.json");
    }
  }
}
