// How a traced failure is judged: the call it describes, and the table of sockets it is judged
// against (the tracker's view as of the call, merged with a snapshot taken after it). Pure.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>

#include "agent/model/call.hpp"
#include "agent/model/event.hpp"
#include "agent/model/socket_table.hpp"
#include "agent/tracker/tracker.hpp"

namespace portlens {

// The failed call an event describes, or nullopt when the event is not a failure portlens
// explains (a success, EINPROGRESS, ECONNREFUSED, ...).
std::optional<Call> call_from_event(const Event& event);

// The table a traced failure is judged against: the tracker's view as of the failing call
// (SocketTracker::table_at: a blocker closed right after the failure is still there), plus the
// snapshot's sockets the events never showed (those older than the trace). Left out: snapshot
// sockets the tracker first saw after the call (born_after), snapshot TIME_WAITs whose 4-tuple
// was still a live connection then, and UDP sockets only the tracker knows (UDP has no
// tracepoint for its close, so they may be long gone). Sockets in both take the tracker's state
// and the snapshot's other fields.
SocketTable merge_for_event(const SocketTable& snapshot, const SocketTable& tracked,
                            const std::function<bool(const SocketEntry&)>& born_after);

// The table a failed call made at at_ns is judged against: merge_for_event() of the snapshot and
// the tracker's view at that moment (tracker may be null: the snapshot alone). A bind() or
// listen() with a port can only conflict with sockets on that port, so only those are copied;
// a TCP connect() EADDRNOTAVAIL only with sockets toward its destination and explicit port
// owners (ConnectScope); autobind needs the whole namespace (the ephemeral range).
SocketTable table_for_call(const Call& call, std::uint64_t at_ns, std::uint64_t now_ns,
                           const SocketTable& snapshot, const SocketTracker* tracker);

}  // namespace portlens
