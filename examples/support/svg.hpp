// examples/support/svg.hpp — a small scatter-plot writer (SVG 1.1, no dependencies).
//
// gsq-sweep draws its quality-versus-memory frontier with this, so the figure exists on
// every machine (gnuplot, when installed, adds a PNG of the same data). The plot is
// deliberately plain: linear axes with "nice" ticks, labelled points in a few colours,
// and polylines for frontiers. Text is XML-escaped.
#pragma once

#include <gsq/core/error.hpp>
#include <gsq/io/atomic_file.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace driver {

class SvgScatter {
 public:
  struct Point {
    double x = 0.0, y = 0.0;
    std::string label;
    int series = 0;      // colour index
    bool marked = false; // drawn filled and larger (e.g. Pareto-optimal)
  };

  SvgScatter(std::string title, std::string x_label, std::string y_label)
      : title_(std::move(title)), x_label_(std::move(x_label)), y_label_(std::move(y_label)) {}

  void add_point(Point p) { points_.push_back(std::move(p)); }
  /// A polyline through `xy` (in data coordinates, drawn in the given order).
  void add_line(std::vector<std::pair<double, double>> xy, std::string legend) {
    lines_.push_back({std::move(xy), std::move(legend)});
  }
  void set_series_names(std::vector<std::string> names) { series_names_ = std::move(names); }

  std::string render() const {
    double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
    for (const Point& p : points_) {
      x0 = std::min(x0, p.x);
      x1 = std::max(x1, p.x);
      y0 = std::min(y0, p.y);
      y1 = std::max(y1, p.y);
    }
    if (points_.empty()) x0 = y0 = 0.0, x1 = y1 = 1.0;
    const std::vector<double> xt = ticks(x0, x1), yt = ticks(y0, y1);
    x0 = xt.front(), x1 = xt.back(), y0 = yt.front(), y1 = yt.back();
    auto px = [&](double x) { return kLeft + (x - x0) / (x1 - x0) * (kWidth - kLeft - kRight); };
    auto py = [&](double y) { return kHeight - kBottom - (y - y0) / (y1 - y0) * (kHeight - kTop - kBottom); };

    std::ostringstream s;
    s << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
      << "\" viewBox=\"0 0 " << kWidth << ' ' << kHeight << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << kWidth / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << escape(title_)
      << "</text>\n";
    // Axes, grid and ticks.
    s << "<g stroke=\"#ddd\">\n";
    for (double t : xt) s << line(px(t), kTop, px(t), kHeight - kBottom);
    for (double t : yt) s << line(kLeft, py(t), kWidth - kRight, py(t));
    s << "</g>\n<g stroke=\"black\">\n"
      << line(kLeft, kHeight - kBottom, kWidth - kRight, kHeight - kBottom) << line(kLeft, kTop, kLeft, kHeight - kBottom)
      << "</g>\n";
    for (double t : xt)
      s << "<text x=\"" << fmt(px(t)) << "\" y=\"" << kHeight - kBottom + 16 << "\" text-anchor=\"middle\">"
        << tick_text(t) << "</text>\n";
    for (double t : yt)
      s << "<text x=\"" << kLeft - 6 << "\" y=\"" << fmt(py(t) + 4) << "\" text-anchor=\"end\">" << tick_text(t)
        << "</text>\n";
    s << "<text x=\"" << (kLeft + kWidth - kRight) / 2 << "\" y=\"" << kHeight - 12
      << "\" text-anchor=\"middle\">" << escape(x_label_) << "</text>\n"
      << "<text transform=\"translate(16," << (kTop + kHeight - kBottom) / 2
      << ") rotate(-90)\" text-anchor=\"middle\">" << escape(y_label_) << "</text>\n";
    // Lines, then points on top.
    for (const auto& l : lines_) {
      s << "<polyline fill=\"none\" stroke=\"#444\" stroke-width=\"1.5\" stroke-dasharray=\"5,3\" points=\"";
      for (const auto& [x, y] : l.xy) s << fmt(px(x)) << ',' << fmt(py(y)) << ' ';
      s << "\"/>\n";
    }
    for (const Point& p : points_) {
      const char* colour = kColours[static_cast<std::size_t>(p.series) % kColours.size()];
      s << "<circle cx=\"" << fmt(px(p.x)) << "\" cy=\"" << fmt(py(p.y)) << "\" r=\"" << (p.marked ? 6 : 4)
        << "\" fill=\"" << (p.marked ? colour : "white") << "\" stroke=\"" << colour << "\" stroke-width=\"2\"/>\n"
        << "<text x=\"" << fmt(px(p.x) + 8) << "\" y=\"" << fmt(py(p.y) - 6) << "\" font-size=\"10\" fill=\"#333\">"
        << escape(p.label) << "</text>\n";
    }
    // Legend: series colours, the frontier, the marking.
    double ly = kTop + 8;
    const double lx = kWidth - kRight + 24;
    for (std::size_t i = 0; i < series_names_.size(); ++i, ly += 16)
      s << "<circle cx=\"" << lx << "\" cy=\"" << fmt(ly) << "\" r=\"5\" fill=\"" << kColours[i % kColours.size()]
        << "\"/><text x=\"" << lx + 10 << "\" y=\"" << fmt(ly + 4) << "\">" << escape(series_names_[i]) << "</text>\n";
    for (const auto& l : lines_) {
      s << line(lx - 6, ly, lx + 6, ly, "stroke=\"#444\" stroke-dasharray=\"5,3\"") << "<text x=\"" << lx + 10
        << "\" y=\"" << fmt(ly + 4) << "\">" << escape(l.legend) << "</text>\n";
      ly += 16;
    }
    s << "<text x=\"" << lx - 6 << "\" y=\"" << fmt(ly + 4)
      << "\" font-size=\"10\" fill=\"#555\">filled: Pareto-optimal</text>\n";
    s << "</svg>\n";
    return s.str();
  }

  void write(const std::filesystem::path& path) const {
    gsq::write_file_atomically(path, render());
  }

  /// "Nice" tick positions (1, 2, 2.5, 5 × 10^k steps) covering [lo, hi].
  static std::vector<double> ticks(double lo, double hi) {
    if (!(hi > lo)) {
      const double pad = lo != 0.0 ? std::fabs(lo) * 0.05 : 1.0;
      lo -= pad;
      hi += pad;
    }
    const double raw = (hi - lo) / 6.0;
    const double mag = std::pow(10.0, std::floor(std::log10(raw)));
    double step = mag;
    for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
      if (m * mag >= raw) {
        step = m * mag;
        break;
      }
    std::vector<double> t;
    for (double v = std::floor(lo / step) * step; v < hi + step * 0.999; v += step) t.push_back(v);
    if (t.size() < 2) t.push_back(t.back() + step);
    return t;
  }

 private:
  static constexpr int kWidth = 900, kHeight = 500, kLeft = 70, kRight = 170, kTop = 40, kBottom = 50;
  static constexpr std::array<const char*, 8> kColours = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                                          "#9467bd", "#8c564b", "#e377c2", "#17becf"};
  struct Line {
    std::vector<std::pair<double, double>> xy;
    std::string legend;
  };

  static std::string fmt(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.1f", v);
    return b;
  }
  static std::string tick_text(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", std::fabs(v) < 1e-12 ? 0.0 : v);
    return b;
  }
  static std::string line(double x1, double y1, double x2, double y2, const char* extra = "") {
    return "<line x1=\"" + fmt(x1) + "\" y1=\"" + fmt(y1) + "\" x2=\"" + fmt(x2) + "\" y2=\"" + fmt(y2) + "\" " +
           extra + "/>\n";
  }
  static std::string escape(const std::string& text) {
    std::string out;
    for (char c : text) {
      switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        default: out += c;
      }
    }
    return out;
  }

  std::string title_, x_label_, y_label_;
  std::vector<Point> points_;
  std::vector<Line> lines_;
  std::vector<std::string> series_names_;
};

}  // namespace driver
