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

struct Diagnosis {
  Cause cause = Cause::kUnknown;
  std::vector<Blocker> blockers;  // definite blockers first, then by severity
  std::string hint;               // one actionable line
  // ephemeral_exhausted (and an unexplained exhaustion errno): the accounting behind it.
  std::optional<EphemeralAccount> ephemeral;
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
