// How a `portlens top` frame (the JSON of top_snapshot()) looks: lines of text for a screen of a
// given size, or for a plain print. Pure: the terminal loop draws these lines, --once prints
// them, and the unit tests read them.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace portlens {

enum class TopSection : std::uint8_t { kNamespaces, kListeners, kPorts, kDestinations, kFailures };
inline constexpr std::size_t kTopSections = 5;

struct TopLine {
  enum class Style : std::uint8_t { kPlain, kTitle, kFocusedTitle, kHeader, kStatus };
  std::string text;
  Style style = Style::kPlain;
};

// Rows per section when the height is not bounded (--once).
inline constexpr std::size_t kTopPlainRows = 50;

class TopView {
 public:
  // Applies a key (a character, or ncurses' KEY_* codes passed as int): Tab and the arrows move
  // the focus, s cycles the focused table's sort column, t/l/u/f jump to a table and its main
  // column. Returns false for q (quit).
  bool key(int ch);

  [[nodiscard]] TopSection focus() const { return focus_; }
  // The focused table's sort column, by its title ("TIME_WAIT").
  [[nodiscard]] std::string sort_name() const;

  // The frame as lines. previous, when not null, is the frame before: failures per second are
  // the growth of their counters between the two. width 0: lines as long as they are; height
  // 0: every section with up to kTopPlainRows rows, no key help. Otherwise at most height lines
  // of at most width characters, the focused table given the rows the others do not need.
  // Every string that came from the kernel or /proc is escaped (escape_for_terminal).
  [[nodiscard]] std::vector<TopLine> render(const nlohmann::json& frame,
                                            const nlohmann::json* previous, std::size_t width,
                                            std::size_t height) const;

 private:
  TopSection focus_ = TopSection::kNamespaces;
  std::array<std::size_t, kTopSections> sort_{};
};

// text cut or padded to exactly width columns (counting UTF-8 code points), or as it is when
// width is 0.
std::string fit_columns(const std::string& text, std::size_t width);

}  // namespace portlens
