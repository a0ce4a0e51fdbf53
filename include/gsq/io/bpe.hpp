// gsq/io/bpe.hpp — the merge loop shared by both BPE tokenizers, and UTF-8 helpers.
//
// Both references merge the same way: repeatedly take the best adjacent pair (llama2.c:
// highest vocab score; `tokenizers`: lowest merge rank), leftmost on ties, until no pair
// merges. Rescanning all pairs per merge (run.c) is O(n²) — minutes for a book — so this
// keeps the symbols in a linked list and candidate pairs in a binary heap keyed by
// (priority, left position): stale entries are detected on pop by re-checking the pair,
// and each merge pushes at most the two new neighbour pairs. O(n log n), same result.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <string_view>
#include <vector>

#include "gsq/core/config.hpp"

GSQ_NAMESPACE_BEGIN
namespace io::detail {

/// Merges `ids` in place. `rule(left, right, merged, priority)` returns true if the pair
/// (left, right) merges into `merged`; pairs with a larger `priority` merge first, the
/// leftmost one on ties.
///
/// The queue holds only (priority, left position) packed into one uint64 — 8 bytes per
/// entry keeps a book-sized queue in cache. An entry is current if the symbol at its
/// position still has a right neighbour and that pair still has the entry's priority;
/// then it is the best pair in the text (every adjacency got an entry when it formed),
/// so merging it is right even if the entry was pushed for an earlier pair.
template <class Rule>
void bpe_merge(std::vector<std::int32_t>& ids, Rule&& rule) {
  const std::size_t n = ids.size();
  if (n < 2) return;
  GSQ_ASSERT(n < (std::size_t{1} << 31));
  std::vector<std::int32_t> next(n), prev(n);
  for (std::size_t i = 0; i < n; ++i) {
    next[i] = i + 1 < n ? static_cast<std::int32_t>(i + 1) : -1;
    prev[i] = static_cast<std::int32_t>(i) - 1;
  }
  auto key = [](std::uint32_t priority, std::int32_t left) {
    return (static_cast<std::uint64_t>(priority) << 32) | (~static_cast<std::uint32_t>(left));
  };
  std::vector<std::uint64_t> heap;
  heap.reserve(n);
  std::int32_t merged = -1;
  std::uint32_t priority = 0;
  for (std::size_t i = 0; i + 1 < n; ++i)
    if (rule(ids[i], ids[i + 1], merged, priority)) heap.push_back(key(priority, static_cast<std::int32_t>(i)));
  std::make_heap(heap.begin(), heap.end());
  auto consider = [&](std::int32_t left, std::int32_t right) {
    if (rule(ids[static_cast<std::size_t>(left)], ids[static_cast<std::size_t>(right)], merged, priority)) {
      heap.push_back(key(priority, left));
      std::push_heap(heap.begin(), heap.end());
    }
  };
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const std::uint64_t top = heap.back();
    heap.pop_back();
    const auto left = static_cast<std::int32_t>(~static_cast<std::uint32_t>(top));
    const auto want = static_cast<std::uint32_t>(top >> 32);
    const std::size_t l = static_cast<std::size_t>(left);
    if (ids[l] < 0 || next[l] < 0) continue;  // merged away, or now the last symbol
    const std::size_t r = static_cast<std::size_t>(next[l]);
    if (!rule(ids[l], ids[r], merged, priority) || priority != want) continue;  // stale
    ids[l] = merged;
    ids[r] = -1;
    next[l] = next[r];
    if (next[r] >= 0) prev[static_cast<std::size_t>(next[r])] = left;
    if (prev[l] >= 0) consider(prev[l], left);
    if (next[l] >= 0) consider(left, next[l]);
  }
  std::size_t out = 0;
  for (std::int32_t i = 0; i >= 0; i = next[static_cast<std::size_t>(i)]) ids[out++] = ids[static_cast<std::size_t>(i)];
  ids.resize(out);
}

/// A float priority as an unsigned key with the same order (for finite values).
inline std::uint32_t float_priority(float f) noexcept {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  return (u & 0x80000000u) != 0 ? ~u : (u | 0x80000000u);
}

/// Length of the UTF-8 character starting at s[i] (1 for an invalid or truncated one, so
/// arbitrary bytes still split into characters).
inline std::size_t utf8_char_length(std::string_view s, std::size_t i) noexcept {
  const auto b = static_cast<unsigned char>(s[i]);
  std::size_t len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
  if (len == 0 || i + len > s.size()) return 1;
  for (std::size_t k = 1; k < len; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 1;
  return len;
}

/// Whether `s` is well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF).
inline bool utf8_valid(std::string_view s) noexcept {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if ((b0 >> 5) == 0x6) {
      len = 2;
      cp = b0 & 0x1Fu;
    } else if ((b0 >> 4) == 0xE) {
      len = 3;
      cp = b0 & 0x0Fu;
    } else if ((b0 >> 3) == 0x1E) {
      len = 4;
      cp = b0 & 0x07u;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3Fu);
    }
    const std::uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

/// The byte of a "<0xHH>" piece (hex digits either case), or -1.
inline int byte_piece_value(std::string_view piece) noexcept {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int v = 0;
  for (int k = 3; k < 5; ++k) {
    const char c = piece[static_cast<std::size_t>(k)];
    const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
                  : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

}  // namespace io::detail
GSQ_NAMESPACE_END
