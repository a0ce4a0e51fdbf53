// gsq/io/tokenizer.hpp — the interface every tokenizer implements.
//
// Drivers and data pipelines take a `Tokenizer&` and do not care whether it came from a
// llama2.c `tok*.bin` or a Hugging Face `tokenizer.json` (see tokenizer_factory.hpp for
// `load_tokenizer`, which picks by file). Each implementation reproduces its reference
// exactly (run.c `encode()`, the `tokenizers` BPE pipeline) — ids are what the model was
// trained on, so "close" is wrong.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"

GSQ_NAMESPACE_BEGIN

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  /// Token ids of `text`, with the beginning-of-sequence token(s) first when `bos` and the
  /// end-of-sequence token last when `eos`.
  virtual std::vector<std::int32_t> encode(std::string_view text, bool bos, bool eos) const = 0;
  /// The text of `ids`; BOS/EOS and other special tokens produce no text. Throws
  /// ShapeError(kIndexOutOfRange) for an id outside [0, vocab_size()).
  virtual std::string decode(std::span<const std::int32_t> ids) const = 0;

  virtual std::int32_t vocab_size() const noexcept = 0;
  /// -1 when the tokenizer has none.
  virtual std::int32_t bos_id() const noexcept = 0;
  virtual std::int32_t eos_id() const noexcept = 0;
  /// The stored string of token `id` (for listings; not decoded).
  virtual std::string_view piece(std::int32_t id) const = 0;
  /// "llama2.c" or "huggingface-bpe".
  virtual std::string_view kind() const noexcept = 0;

 protected:
  Tokenizer() = default;
  Tokenizer(const Tokenizer&) = default;
  Tokenizer& operator=(const Tokenizer&) = default;

  void check_id(std::int32_t id) const {
    GSQ_CHECK(id >= 0 && id < vocab_size(), ErrorCode::kIndexOutOfRange,
              "Tokenizer::decode: token id " + std::to_string(id) + " outside [0, " +
                  std::to_string(vocab_size()) + ")");
  }
};

GSQ_NAMESPACE_END
