// gsq/io/llama2c_tokenizer.hpp — llama2.c's tokenizer file (`tok512.bin`,
// `tokenizer.bin`) and its encode()/decode(), exactly as run.c does them.
//
// File: int32 max_token_length, then one entry per token until the end of the file:
// float32 score, int32 byte length, the bytes (no terminator). 0 = <unk>, 1 = BOS,
// 2 = EOS, 3..258 = the byte tokens <0x00>..<0xFF>, then merges scored -(rank).
//
// encode (run.c): optional BOS; if the text is not empty the id of " " (the dummy
// prefix); each UTF-8 code point's id, or, if the vocabulary lacks it, one token per
// byte with id byte + 3 (run.c's quirks with broken UTF-8 kept: a run of continuation
// bytes is cut every 4 bytes); then merge the adjacent pair whose concatenation has the
// highest score (> -1e10), leftmost on ties, until none; optional EOS. The merge loop is
// bpe.hpp's priority queue instead of run.c's rescan, with the same result.
// decode (run.c): the piece of each id, without its leading space right after BOS,
// "<0xHH>" pieces as the raw byte; BOS and EOS themselves produce no text.
//
// Differences from run.c, all for input run.c cannot take: the text may contain NUL
// bytes (run.c stops at the first); a missing " " or byte token (a vocabulary smaller
// than 259) falls back to <unk> instead of an out-of-range id.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/io/bpe.hpp"
#include "gsq/io/bytes.hpp"
#include "gsq/io/mapped_file.hpp"
#include "gsq/io/tokenizer.hpp"

GSQ_NAMESPACE_BEGIN

class Llama2cTokenizer final : public Tokenizer {
 public:
  static constexpr std::int32_t kMaxTokenLength = 1 << 16;

  /// Parses a tokenizer file held in `file`; IoError names the file and offset.
  static std::unique_ptr<Llama2cTokenizer> parse(const MappedFile& file) {
    const std::string& name = file.name();
    io::detail::ByteReader r(file.bytes(), name);
    auto t = std::unique_ptr<Llama2cTokenizer>(new Llama2cTokenizer());
    t->max_token_length_ = r.read_i32("max_token_length");
    if (t->max_token_length_ <= 0 || t->max_token_length_ > kMaxTokenLength)
      detail::throw_io_error(ErrorCode::kCorrupt,
                             "max_token_length " + std::to_string(t->max_token_length_) +
                                 " outside [1, " + std::to_string(kMaxTokenLength) + "]",
                             name, 0);
    while (!r.at_end()) {
      const std::size_t at = r.offset();
      if (t->pieces_.size() >= static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
        detail::throw_io_error(ErrorCode::kCorrupt, "too many tokens", name, static_cast<std::int64_t>(at));
      const float score = r.read_f32("a token score");
      const std::int32_t len = r.read_i32("a token length");
      if (len < 0 || len > t->max_token_length_)
        detail::throw_io_error(ErrorCode::kCorrupt,
                               "token " + std::to_string(t->pieces_.size()) + " has length " +
                                   std::to_string(len) + ", outside [0, max_token_length " +
                                   std::to_string(t->max_token_length_) + "]",
                               name, static_cast<std::int64_t>(at + 4));
      const std::span<const std::uint8_t> bytes = r.take(static_cast<std::size_t>(len), "a token's bytes");
      t->pieces_.emplace_back(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      t->scores_.push_back(score);
    }
    if (t->pieces_.size() < 3)
      detail::throw_io_error(ErrorCode::kTruncated,
                             "only " + std::to_string(t->pieces_.size()) +
                                 " tokens (need at least <unk>, BOS and EOS)",
                             name, static_cast<std::int64_t>(file.size()));
    t->lookup_.reserve(t->pieces_.size() * 2);
    for (std::size_t i = 0; i < t->pieces_.size(); ++i)
      t->lookup_.emplace(t->pieces_[i], static_cast<std::int32_t>(i));  // first id wins
    t->space_id_ = t->find(" ");
    return t;
  }
  /// Reads the tokenizer file at `path`.
  static std::unique_ptr<Llama2cTokenizer> open(const std::filesystem::path& path) {
    return parse(MappedFile::open(path));
  }

  std::vector<std::int32_t> encode(std::string_view text, bool bos, bool eos) const override {
    GSQ_CHECK(text.size() < static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max() / 2),
              ErrorCode::kInvalidArgument, "Llama2cTokenizer::encode: text too long");
    std::vector<std::int32_t> ids;
    ids.reserve(text.size() + 3);
    if (bos) ids.push_back(kBos);  // part of the merge sequence, as in run.c
    if (!text.empty()) ids.push_back(space_id_ >= 0 ? space_id_ : byte_id(' '));
    // Code points (run.c's loop, byte for byte).
    char buffer[5];
    std::size_t len = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
      const auto c = static_cast<unsigned char>(text[i]);
      if ((c & 0xC0) != 0x80) len = 0;
      buffer[len++] = static_cast<char>(c);
      const bool next_continues =
          i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80;
      if (next_continues && len < 4) continue;
      const std::int32_t id = find(std::string_view(buffer, len));
      if (id >= 0) {
        ids.push_back(id);
      } else {
        for (std::size_t k = 0; k < len; ++k) ids.push_back(byte_id(static_cast<unsigned char>(buffer[k])));
      }
      len = 0;
    }
    // Merges: pair concatenations looked up once per distinct pair.
    std::unordered_map<std::uint64_t, std::int32_t> memo;
    std::string joined;
    io::detail::bpe_merge(ids, [&](std::int32_t a, std::int32_t b, std::int32_t& merged, std::uint32_t& priority) {
      const std::uint64_t key = (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) |
                                static_cast<std::uint32_t>(b);
      auto it = memo.find(key);
      if (it == memo.end()) {
        joined.assign(pieces_[static_cast<std::size_t>(a)]);
        joined.append(pieces_[static_cast<std::size_t>(b)]);
        std::int32_t id = find(joined);
        // run.c starts from best_score = -1e10 and needs a strictly higher score (so NaN
        // never merges).
        if (id >= 0 && !(scores_[static_cast<std::size_t>(id)] > -1e10f)) id = -1;
        it = memo.emplace(key, id).first;
      }
      if (it->second < 0) return false;
      merged = it->second;
      priority = io::detail::float_priority(scores_[static_cast<std::size_t>(merged)]);
      return true;
    });
    if (eos) ids.push_back(kEos);
    return ids;
  }

  std::string decode(std::span<const std::int32_t> ids) const override {
    std::string out;
    std::int32_t prev = -1;
    for (const std::int32_t id : ids) {
      check_id(id);
      if (id != kBos && id != kEos) {
        std::string_view piece = pieces_[static_cast<std::size_t>(id)];
        if (prev == kBos && !piece.empty() && piece[0] == ' ') piece.remove_prefix(1);
        const int byte = io::detail::byte_piece_value(piece);
        if (byte >= 0) {
          out.push_back(static_cast<char>(byte));
        } else {
          out.append(piece);
        }
      }
      prev = id;
    }
    return out;
  }

  std::int32_t vocab_size() const noexcept override {
    return static_cast<std::int32_t>(pieces_.size());
  }
  std::int32_t bos_id() const noexcept override { return kBos; }
  std::int32_t eos_id() const noexcept override { return kEos; }
  std::string_view piece(std::int32_t id) const override {
    check_id(id);
    return pieces_[static_cast<std::size_t>(id)];
  }
  std::string_view kind() const noexcept override { return "llama2.c"; }

  float score(std::int32_t id) const {
    check_id(id);
    return scores_[static_cast<std::size_t>(id)];
  }
  std::int32_t max_token_length() const noexcept { return max_token_length_; }

 private:
  static constexpr std::int32_t kBos = 1;
  static constexpr std::int32_t kEos = 2;

  Llama2cTokenizer() = default;

  std::int32_t find(std::string_view s) const {
    auto it = lookup_.find(std::string(s));
    return it == lookup_.end() ? -1 : it->second;
  }
  std::int32_t byte_id(unsigned char b) const noexcept {
    const std::int32_t id = static_cast<std::int32_t>(b) + 3;
    return id < vocab_size() ? id : 0;
  }

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, std::int32_t> lookup_;
  std::int32_t max_token_length_ = 0;
  std::int32_t space_id_ = -1;
};

GSQ_NAMESPACE_END
