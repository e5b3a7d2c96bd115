// Identical failures share one diagnosis: a process that retries bind() in a loop, or a local
// user flooding failed calls, must not make the agent judge each one (a judgment copies the
// port's sockets and may walk the namespace). Pure; docs/architecture.md, "Diagnosis under a
// flood".
//
// Two failures are identical when they have the same namespace, call, protocol, address (the
// port asked for; for connect() the destination), errno, socket options and uid: the kernel
// decides them with the same rules. The second is given the first's diagnosis only while
// nothing the first was judged against can have changed:
// - within the window after the judged one;
// - before the first blocking TIME_WAIT it named expires;
// - with no event since the judged one on the same local port (bind, listen) or toward the same
//   destination (connect), and for connect() no successful bind() in the namespace either (an
//   explicit port owner). Any such event ends the window early, conservatively: the next
//   failure is judged again.
// Failures without a fixed port (autobind, port 0) depend on the whole namespace and are never
// coalesced.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "agent/diagnose/diagnoser.hpp"
#include "agent/model/event.hpp"
#include "agent/model/inet.hpp"

namespace portlens {

// What a failure's diagnosis depends on, as events name it.
struct ChangeKey {
  std::uint64_t netns = 0;
  bool destination = false;  // false: a local port (where is 0.0.0.0:port); true: a peer
  Endpoint where;
  // NOLINTNEXTLINE(modernize-use-nullptr): clang-tidy 14 misreads a defaulted <=>
  auto operator<=>(const ChangeKey&) const = default;
  bool operator==(const ChangeKey&) const = default;
};

struct FailureKey {
  std::uint64_t netns = 0;
  EventType type = EventType::kBind;
  Proto proto = Proto::kTcp;
  Family family = Family::kIpv4;
  int result = 0;
  Endpoint address;
  std::uint32_t uid = 0;
  bool reuseaddr = false;
  bool reuseport = false;
  bool v6only = false;
  bool freebind = false;
  int bound_dev_if = 0;
  std::uint16_t enter_port = 0;
  // NOLINTNEXTLINE(modernize-use-nullptr): clang-tidy 14 misreads a defaulted <=>
  auto operator<=>(const FailureKey&) const = default;
  bool operator==(const FailureKey&) const = default;
};

// The key of a failure that may be coalesced; nullopt for one that must always be judged.
std::optional<FailureKey> failure_key(const Event& failure);
// What a failure with this key depends on.
ChangeKey change_key(const FailureKey& key);

class FailureCoalescer {
 public:
  struct Options {
    std::uint64_t window_ns = 1'000'000'000;
    std::size_t max_keys = 4096;  // distinct failures remembered at once; beyond, judged
  };
  // A window that closed with repeats: the judged failure, its diagnosis, and how many were
  // given that diagnosis after it.
  struct Closed {
    Event first;
    Diagnosis diagnosis;
    std::uint64_t repeats = 0;
    std::uint64_t last_ts_ns = 0;
  };

  explicit FailureCoalescer(Options options);

  // Whether note_change() has anything to watch: windows are open or failures wait for their
  // judgment. When not, events need not be shown to it.
  [[nodiscard]] bool watching() const { return !last_change_ns_.empty(); }
  // A failure, before the events after it are applied: what it depends on is watched from now
  // on, so that a repeat after a change is judged again.
  void watch(const Event& failure);
  // An event that is not a failure, as it is applied: ends the windows it may affect.
  void note_change(const Event& event);
  // The diagnosis of an earlier identical failure that is still valid for this one, counted
  // as a repeat; null when it must be judged.
  const Diagnosis* repeat(const Event& failure);
  // A judged failure, judged at now_ns: opens its window (replacing an older one, whose repeats
  // are closed).
  void judged(const Event& failure, const Diagnosis& diagnosis, std::uint64_t now_ns);
  // Windows that ended by now_ns, and those ended early by a change, with their repeats (those
  // without repeats are dropped silently). Clears them.
  std::vector<Closed> take_closed(std::uint64_t now_ns);

  [[nodiscard]] std::size_t open_windows() const { return open_.size(); }

 private:
  struct Window {
    Event first;
    Diagnosis diagnosis;
    std::uint64_t valid_until_ns = 0;
    std::uint64_t repeats = 0;
    std::uint64_t last_ts_ns = 0;
  };
  void close(std::map<FailureKey, Window>::iterator it);
  void changed(const ChangeKey& key, std::uint64_t ts_ns);
  [[nodiscard]] bool still_valid(const FailureKey& key, const Window& w, const Event& e) const;

  const Options options_;
  std::map<FailureKey, Window> open_;
  // Change keys watched (by open windows or failures not yet judged): the last change seen
  // (0: none) and when the key was last watched. Bounded; a key that cannot be watched opens
  // no window.
  struct Watched {
    std::uint64_t last_change_ns = 0;
    std::uint64_t watched_ns = 0;
    std::size_t windows = 0;  // open windows that depend on it
  };
  std::map<ChangeKey, Watched> last_change_ns_;
  // The last successful bind() per namespace, while any is watched: it may take a port a
  // connect() window counted as free.
  std::map<std::uint64_t, std::uint64_t> last_bind_ns_;
  std::vector<Closed> closed_;
};

}  // namespace portlens
