// examples/support/word_tokenizer.hpp — a word-level tokenizer built from a corpus.
//
// gsq-quickstart must work on a machine with nothing downloaded, so when no real model
// and tokenizer are available it builds its own tiny LLaMA over generated text. A
// word-level vocabulary keeps those sequences short (a story is ~60 tokens instead of
// ~300 characters), which is what makes pre-training plus two fine-tuning runs fit in the
// time budget. Words are runs of letters, digits and apostrophes; every other printable
// character is a token of its own, and so is "\n"; spaces only separate. Unknown words
// become <unk>. Decoding puts spaces back between words (not before punctuation).
#pragma once

#include <gsq/io/tokenizer.hpp>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace driver {

class WordTokenizer final : public gsq::Tokenizer {
 public:
  /// The vocabulary of every token in `corpus` (sorted, after <unk>, <s>, </s>).
  explicit WordTokenizer(const std::vector<std::string>& corpus) {
    pieces_ = {"<unk>", "<s>", "</s>"};
    std::vector<std::string> words;
    for (const std::string& text : corpus) split(text, [&](std::string_view w) { words.emplace_back(w); });
    std::sort(words.begin(), words.end());
    words.erase(std::unique(words.begin(), words.end()), words.end());
    pieces_.insert(pieces_.end(), words.begin(), words.end());
    for (std::size_t i = 0; i < pieces_.size(); ++i) ids_.emplace(pieces_[i], static_cast<std::int32_t>(i));
  }

  std::vector<std::int32_t> encode(std::string_view text, bool bos, bool eos) const override {
    std::vector<std::int32_t> out;
    if (bos) out.push_back(kBos);
    split(text, [&](std::string_view w) {
      auto it = ids_.find(std::string(w));
      out.push_back(it == ids_.end() ? kUnk : it->second);
    });
    if (eos) out.push_back(kEos);
    return out;
  }

  std::string decode(std::span<const std::int32_t> ids) const override {
    std::string out;
    std::string_view prev;
    for (std::int32_t id : ids) {
      check_id(id);
      if (id == kBos || id == kEos) continue;
      const std::string_view piece = pieces_[static_cast<std::size_t>(id)];
      const bool word = is_word_char(piece.front());
      const bool after_text = !prev.empty() && prev != "\n";
      if (after_text && (word || (piece == "#" && prev != "#"))) out += ' ';
      out += piece;
      prev = piece;
    }
    return out;
  }

  std::int32_t vocab_size() const noexcept override { return static_cast<std::int32_t>(pieces_.size()); }
  std::int32_t bos_id() const noexcept override { return kBos; }
  std::int32_t eos_id() const noexcept override { return kEos; }
  std::string_view piece(std::int32_t id) const override {
    check_id(id);
    return pieces_[static_cast<std::size_t>(id)];
  }
  std::string_view kind() const noexcept override { return "word"; }

 private:
  static constexpr std::int32_t kUnk = 0, kBos = 1, kEos = 2;

  static bool is_word_char(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '\'';
  }

  template <class Emit>
  static void split(std::string_view text, Emit&& emit) {
    std::size_t i = 0;
    while (i < text.size()) {
      const char c = text[i];
      if (is_word_char(c)) {
        std::size_t j = i;
        while (j < text.size() && is_word_char(text[j])) ++j;
        emit(text.substr(i, j - i));
        i = j;
      } else {
        if (c != ' ' && c != '\t' && c != '\r') emit(text.substr(i, 1));
        ++i;
      }
    }
  }

  std::vector<std::string> pieces_;
  std::map<std::string, std::int32_t, std::less<>> ids_;
};

}  // namespace driver
