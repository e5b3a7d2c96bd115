#include "agent/live/coalesce.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>

namespace portlens {
namespace {

// A watched key nothing refers to any more is forgotten after this long (a failure waits in
// the diagnosis queue for far less).
constexpr std::uint64_t kWatchTtlNs = 10'000'000'000ULL;

Endpoint port_only(const Endpoint& e) { return Endpoint{IpAddress::any_v4(), e.port}; }

Endpoint unmapped(const Endpoint& e) { return Endpoint{e.addr.unmapped(), e.port}; }

}  // namespace

std::optional<FailureKey> failure_key(const Event& e) {
  if (!e.failed() || !e.is_call()) {
    return std::nullopt;
  }
  FailureKey k;
  k.netns = e.netns;
  k.type = e.type;
  k.proto = e.proto == Proto::kMptcp ? Proto::kTcp : e.proto;
  k.family = e.family;
  k.result = e.result;
  k.uid = e.sock_uid.value_or(e.uid);
  const SocketOptions o = e.opts.value_or(SocketOptions{});
  k.reuseaddr = o.reuseaddr;
  k.reuseport = o.reuseport;
  k.v6only = o.v6only;
  k.freebind = o.freebind;
  k.bound_dev_if = o.bound_dev_if;
  switch (e.type) {
    case EventType::kBind:
      if (!e.requested || e.requested->port == 0) {
        return std::nullopt;  // autobind: the whole namespace's ports decide
      }
      k.address = unmapped(*e.requested);
      break;
    case EventType::kListen:
      if (!e.local || e.local->port == 0) {
        return std::nullopt;
      }
      k.address = unmapped(*e.local);
      break;
    case EventType::kConnect:
      // Only the exhaustion toward one destination: its inputs are the sockets toward it and
      // the explicit port owners, both of which events show.
      if (!e.requested || e.result != -EADDRNOTAVAIL || k.proto != Proto::kTcp) {
        return std::nullopt;
      }
      k.address = unmapped(*e.requested);
      k.enter_port = e.enter_port;
      break;
    default:
      return std::nullopt;
  }
  return k;
}

ChangeKey change_key(const FailureKey& key) {
  if (key.type == EventType::kConnect) {
    return ChangeKey{key.netns, true, key.address};
  }
  return ChangeKey{key.netns, false, port_only(key.address)};
}

FailureCoalescer::FailureCoalescer(Options options) : options_(options) {}

void FailureCoalescer::watch(const Event& failure) {
  const auto key = failure_key(failure);
  if (!key) {
    return;
  }
  const ChangeKey ck = change_key(*key);
  if (const auto it = last_change_ns_.find(ck); it != last_change_ns_.end()) {
    it->second.watched_ns = std::max(it->second.watched_ns, failure.ts_ns);
    return;
  }
  if (last_change_ns_.size() >= 4 * options_.max_keys) {
    return;  // not watched: judged() opens no window for it
  }
  last_change_ns_.emplace(ck, Watched{0, failure.ts_ns});
  if (key->type == EventType::kConnect) {
    last_bind_ns_.try_emplace(key->netns, 0);
  }
}

void FailureCoalescer::changed(const ChangeKey& key, std::uint64_t ts_ns) {
  if (const auto it = last_change_ns_.find(key); it != last_change_ns_.end()) {
    it->second.last_change_ns = std::max(it->second.last_change_ns, ts_ns);
  }
}

void FailureCoalescer::note_change(const Event& e) {
  if (e.is_call() && e.failed()) {
    return;  // a failed call changes nothing
  }
  if (e.type == EventType::kBind) {
    if (const auto it = last_bind_ns_.find(e.netns); it != last_bind_ns_.end()) {
      it->second = std::max(it->second, e.ts_ns);
    }
  }
  for (const auto& local : {e.local, e.requested}) {
    if (local && local->port != 0 && !(e.type == EventType::kConnect && local == e.requested)) {
      changed(ChangeKey{e.netns, false, port_only(*local)}, e.ts_ns);
    }
  }
  // A connect() names its destination as requested; socket events as remote.
  const std::optional<Endpoint> peer = e.type == EventType::kConnect ? e.requested : e.remote;
  if (peer) {
    changed(ChangeKey{e.netns, true, unmapped(*peer)}, e.ts_ns);
  }
}

bool FailureCoalescer::still_valid(const FailureKey& key, const Window& w, const Event& e) const {
  if (e.ts_ns < w.first.ts_ns || e.ts_ns > w.valid_until_ns) {
    return false;
  }
  const auto it = last_change_ns_.find(change_key(key));
  if (it == last_change_ns_.end() || it->second.last_change_ns > w.first.ts_ns) {
    return false;  // something it was judged against may have changed since
  }
  if (key.type == EventType::kConnect) {
    const auto b = last_bind_ns_.find(key.netns);
    if (b == last_bind_ns_.end() || b->second > w.first.ts_ns) {
      return false;
    }
  }
  return true;
}

const Diagnosis* FailureCoalescer::repeat(const Event& failure) {
  const auto key = failure_key(failure);
  if (!key) {
    return nullptr;
  }
  const auto it = open_.find(*key);
  if (it == open_.end() || !still_valid(*key, it->second, failure)) {
    return nullptr;
  }
  ++it->second.repeats;
  it->second.last_ts_ns = std::max(it->second.last_ts_ns, failure.ts_ns);
  return &it->second.diagnosis;
}

void FailureCoalescer::close(std::map<FailureKey, Window>::iterator it) {
  if (const auto w = last_change_ns_.find(change_key(it->first));
      w != last_change_ns_.end() && w->second.windows > 0) {
    --w->second.windows;
  }
  if (it->second.repeats > 0) {
    closed_.push_back(Closed{std::move(it->second.first), std::move(it->second.diagnosis),
                             it->second.repeats, it->second.last_ts_ns});
  }
  open_.erase(it);
}

void FailureCoalescer::judged(const Event& failure, const Diagnosis& diagnosis,
                              std::uint64_t now_ns) {
  const auto key = failure_key(failure);
  if (!key || !last_change_ns_.contains(change_key(*key))) {
    return;  // not coalesced, or its inputs are not watched
  }
  if (!diagnosis.inspected) {
    // Nothing was looked at (the namespace could not be read): the next one is judged afresh,
    // and an open window's repeats keep their diagnosis.
    return;
  }
  if (const auto it = open_.find(*key); it != open_.end()) {
    close(it);
  } else if (open_.size() >= options_.max_keys) {
    return;
  }
  Window w;
  w.first = failure;
  w.diagnosis = diagnosis;
  w.valid_until_ns = failure.ts_ns + options_.window_ns;
  // A TIME_WAIT it names stops blocking when it expires: repeats after that are judged again.
  for (const Blocker& b : diagnosis.blockers) {
    if (b.socket.state == TcpState::kTimeWait && b.socket.time_wait_remaining) {
      const auto left = static_cast<std::uint64_t>(
          std::chrono::nanoseconds(*b.socket.time_wait_remaining).count());
      w.valid_until_ns = std::min(w.valid_until_ns, now_ns + left);
    }
  }
  w.last_ts_ns = failure.ts_ns;
  open_.emplace(*key, std::move(w));
  ++last_change_ns_[change_key(*key)].windows;
}

std::vector<FailureCoalescer::Closed> FailureCoalescer::take_closed(std::uint64_t now_ns) {
  for (auto it = open_.begin(); it != open_.end();) {
    const auto next = std::next(it);
    const auto w = last_change_ns_.find(change_key(it->first));
    const bool changed =
        w == last_change_ns_.end() || w->second.last_change_ns > it->second.first.ts_ns;
    if (it->second.valid_until_ns < now_ns || changed) {
      close(it);
    }
    it = next;
  }
  // Forget watched keys no window refers to that nothing watched lately.
  for (auto it = last_change_ns_.begin(); it != last_change_ns_.end();) {
    const bool old = it->second.watched_ns + kWatchTtlNs < now_ns;
    it = it->second.windows == 0 && old ? last_change_ns_.erase(it) : std::next(it);
  }
  if (last_change_ns_.empty()) {
    last_bind_ns_.clear();
  }
  std::vector<Closed> out;
  out.swap(closed_);
  return out;
}

}  // namespace portlens
