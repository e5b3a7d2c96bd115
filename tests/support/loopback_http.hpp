// Talking to the agent the way Prometheus does, over loopback: a free port, a GET, and reading
// values out of the text exposition.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace portlens::testing {

using Labels = std::map<std::string, std::string>;

// A free TCP port on 127.0.0.1 in the caller's namespace; throws std::runtime_error.
std::uint16_t free_port();
// GET http://127.0.0.1:port/path; the body, or "" on failure.
std::string http_get(std::uint16_t port, const std::string& path);
// The value of the first series `name` whose labels include all of `labels`, or nullopt.
std::optional<double> metric(const std::string& exposition, const std::string& name,
                             const Labels& labels = {});
// The sum over every such series, or nullopt when there is none.
std::optional<double> metric_sum(const std::string& exposition, const std::string& name,
                                 const Labels& labels = {});

}  // namespace portlens::testing
