// The Prometheus collector: at every scrape it asks the agent for a ScrapeInput and turns it into
// the metric families of docs/architecture.md ("Metrics"). Nothing outlives a scrape, so a port or
// a destination that goes quiet simply stops having series.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "exporters/scrape_input.hpp"

namespace portlens {

inline constexpr std::size_t kDefaultTopK = 20;
// Network namespaces with series of their own, at most: any local user can create namespaces
// (unshare -rn), so the rest are folded into netns="other" (docs/architecture.md, "Metrics").
// With the default top-k a namespace has at most ~140 series.
inline constexpr std::size_t kDefaultMaxNamespaces = 16;

// Label value of the series that sums everything beyond the top-K of a per-port or
// per-destination metric.
inline constexpr const char* kOtherLabel = "other";

class PortlensCollector : public prometheus::Collectable {
 public:
  // source is called once per Collect(), from the scraping thread, and should not throw (an
  // exception leaves Collect() as is); top_k bounds the per-port and per-destination series of
  // each network namespace (top_k 0 leaves only the `other` series); max_namespaces bounds the
  // namespaces with series of their own, the most sockets first, the rest summed under
  // netns="other".
  explicit PortlensCollector(std::function<ScrapeInput()> source, std::size_t top_k = kDefaultTopK,
                             std::size_t max_namespaces = kDefaultMaxNamespaces);

  [[nodiscard]] std::vector<prometheus::MetricFamily> Collect() const override;

  // The same families, from an input at hand (Collect() is source() then this).
  [[nodiscard]] static std::vector<prometheus::MetricFamily> build(
      const ScrapeInput& input, std::size_t top_k,
      std::size_t max_namespaces = kDefaultMaxNamespaces);

 private:
  std::function<ScrapeInput()> source_;
  std::size_t top_k_;
  std::size_t max_namespaces_;
};

// The Prometheus text exposition format (0.0.4) of families, for the HTTP handler and tests.
std::string render_text(const std::vector<prometheus::MetricFamily>& families);

}  // namespace portlens
