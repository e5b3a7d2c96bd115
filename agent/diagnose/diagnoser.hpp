// The diagnoser: re-derives the kernel's decision on a bind(), listen() or connect() from a
// socket table (docs/kernel-rules.md sections 1-4 and 6) to explain a failure or predict an
// outcome. Pure functions over values: no I/O, no globals, no clock.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/diagnose/ephemeral.hpp"
#include "agent/model/call.hpp"
#include "agent/model/inet.hpp"
#include "agent/model/socket_table.hpp"

namespace portlens {

// The cause vocabulary of docs/architecture.md.
enum class Cause : std::uint8_t {
  kTimeWait,
  kMissingReuseaddr,
  kWildcardConflict,
  kPortInUse,
  kReuseportUidMismatch,
  kEphemeralExhausted,
  kFourTupleInUse,
  kAddressNotLocal,
  kPrivilegedPort,
  kUnknown,
};

// "time_wait", "missing_reuseaddr", ... exactly as docs/architecture.md spells them.
std::string_view to_string(Cause cause);
std::optional<Cause> parse_cause(std::string_view text);

struct Blocker {
  SocketEntry socket;
  Cause cause = Cause::kUnknown;  // this blocker's own classification
  std::string why;                // short, e.g. "LISTEN on the same address"
  // False when unknown fields (flags, uid, device, state) leave open whether the kernel would
  // let this socket block; `why` then names what is unknown.
  bool definite = true;
};

// One remedy for the call the user asked about (bind(), and with --listen or a listen() call,
// bind() then listen()), each SUFFICIENT ON ITS OWN: portlens only lists a fix after replaying the
// kernel's decision with it applied (docs/architecture.md, "Fixes"). A change that needs two
// sockets changed is one fix (on "both"). Listed least disruptive first.
struct Fix {
  enum class Kind : std::uint8_t { kSetOption, kWait, kStop, kSysctl, kBindAddress };
  // set_option: the socket to change. "blocker" means every blocker of the diagnosis that is not
  // a TIME_WAIT (a TIME_WAIT keeps the flags it has); "both", those and the new socket.
  enum class On : std::uint8_t { kNew, kBlocker, kBoth };

  Kind kind = Kind::kSetOption;
  std::string option;  // set_option: "SO_REUSEADDR", "SO_REUSEPORT", "IPV6_V6ONLY", ...
  On on = On::kNew;    // set_option
  // set_option on blocker/both: the blockers' processes, where known; stop: the processes.
  std::vector<std::uint32_t> pids;
  std::optional<double> seconds;  // wait: until the last blocking TIME_WAIT expires
  std::string name;               // sysctl: "net.ipv4.tcp_tw_reuse"
  std::string value;              // sysctl: "1"
  std::optional<IpAddress> addr;  // bind_address: what to bind instead
  std::string text;               // the fix as one line for people; not part of the JSON form

  bool operator==(const Fix&) const = default;
};

// "set_option", "wait", "stop", "sysctl", "bind_address"; "new", "blocker", "both".
std::string_view to_string(Fix::Kind kind);
std::string_view to_string(Fix::On on);

struct Diagnosis {
  Cause cause = Cause::kUnknown;
  std::vector<Blocker> blockers;  // definite blockers first, then by severity
  // One actionable line: for the port conflicts, the first fix's text (the uid mismatch says
  // first that one uid would do); for the other causes, the levers with their context.
  std::string hint;
  std::vector<Fix> fixes;  // each sufficient alone, least disruptive first; may be empty
  // ephemeral_exhausted (and an unexplained exhaustion errno): the accounting behind it.
  std::optional<EphemeralAccount> ephemeral;
  // false when the namespace could not be inspected at all (it was gone, or its sockets could
  // not be read): the cause is unknown for want of a look, and says nothing of the next call.
  bool inspected = true;
};

// Explains a call that failed (call.result < 0) with EADDRINUSE, EADDRNOTAVAIL, EAGAIN or
// EACCES. When nothing in the table explains the errno the kernel returned, the cause is
// `unknown`, said plainly in the hint.
Diagnosis diagnose(const Call& call, const SocketTable& table);

enum class Outcome : std::uint8_t { kSucceeds, kFails, kUndetermined };

struct Prediction {
  Outcome outcome = Outcome::kSucceeds;
  std::optional<Syscall> failing_syscall;  // kBind or kListen when the outcome is not success
  int expected_result = 0;                 // negative errno when the outcome is kFails
  // kFails: why; kUndetermined: the sockets that may block, with what is unknown about them.
  std::optional<Diagnosis> diagnosis;
  // Anything a successful prediction should still tell, e.g. sockets whose later listen() this
  // one would make fail.
  std::string note;
};

// `portlens check`: would bind() to call.local (call.syscall is ignored) succeed now, and with
// then_listen the listen() after it? bind() and listen() are separate kernel decisions
// (inet_bind, then inet_csk_listen_start): each is evaluated on its own.
Prediction predict(const Call& bind_call, bool then_listen, const SocketTable& table);

// The accounting of the port range for an automatic port choice by this socket: bind(addr, 0),
// listen() on an unbound socket (inet_csk_find_open_port) or UDP autobind
// (udp_lib_get_port(sk, 0)). in_use counts ports a conflicting owner holds.
EphemeralAccount account_autobind(const Call& call, const SocketTable& table);

}  // namespace portlens
