// Kernel tests of the capture path: real socket calls in a private network namespace, asserted
// against what the BPF programs reported.
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "tests/kernel/harness.hpp"

namespace portlens::testing {
namespace {

TracerConfig config_for(const NetnsSandbox& ns, bool states = false) {
  TracerConfig c;
  c.netns_filter = ns.inode();
  c.tcp_states = states;
  return c;
}

Endpoint ep(const std::string& addr, std::uint16_t port) { return {*IpAddress::parse(addr), port}; }

bool has_calls(const std::vector<Event>& events, EventType type, std::size_t n) {
  return calls_of(events, type).size() >= n;
}

using TraceKernelTest = KernelTest;

TEST_F(TraceKernelTest, SuccessfulBindWithReuseaddrReportsAddressOptionsAndCaller) {
  PORTLENS_START_TRACE(trace, config_for(ns()));
  const int rc = ns().run([] {
    TestSocket s(AF_INET, SOCK_STREAM);
    return s.reuseaddr().bind("127.0.0.1", 8080);
  });
  ASSERT_EQ(rc, 0);
  ASSERT_TRUE(trace->wait_for([](const auto& ev) { return has_calls(ev, EventType::kBind, 1); }));
  const Event e = calls_of(trace->events(), EventType::kBind).at(0);
  EXPECT_EQ(e.result, 0);
  EXPECT_EQ(e.proto, Proto::kTcp);
  EXPECT_EQ(e.family, Family::kIpv4);
  EXPECT_EQ(e.requested, ep("127.0.0.1", 8080));
  EXPECT_EQ(e.local, ep("127.0.0.1", 8080));
  ASSERT_TRUE(e.opts.has_value());
  EXPECT_TRUE(e.opts->reuseaddr);
  EXPECT_FALSE(e.opts->reuseport);
  EXPECT_FALSE(e.opts->v6only);
  EXPECT_EQ(e.opts->bound_dev_if, 0);
  EXPECT_EQ(e.pid, static_cast<std::uint32_t>(getpid()));
  EXPECT_NE(e.tid, e.pid);  // the sandbox thread made the call, not the main thread
  EXPECT_EQ(e.uid, getuid());
  EXPECT_EQ(e.sock_uid, getuid());
  EXPECT_EQ(e.netns, ns().inode());
  EXPECT_FALSE(e.comm.empty());
  EXPECT_NE(e.cgroup_id, 0U);
  EXPECT_EQ(trace->drops().total(), 0U);
  EXPECT_EQ(trace->malformed(), 0U);
}

TEST_F(TraceKernelTest, FailedBindReportsTheRequestedAddressNotZero) {
  PORTLENS_START_TRACE(trace, config_for(ns()));
  const auto [first, second] = ns().run([] {
    TestSocket a(AF_INET, SOCK_STREAM);
    TestSocket b(AF_INET, SOCK_STREAM);
    const int r1 = a.bind("127.0.0.1", 9090);
    const int r2 = b.bind("127.0.0.1", 9090);
    return std::pair{r1, r2};
  });
  ASSERT_EQ(first, 0);
  ASSERT_EQ(second, EADDRINUSE);
  ASSERT_TRUE(trace->wait_for([](const auto& ev) { return has_calls(ev, EventType::kBind, 2); }));
  const auto binds = calls_of(trace->events(), EventType::kBind);
  EXPECT_EQ(binds[0].result, 0);
  EXPECT_EQ(binds[1].result, -EADDRINUSE);
  EXPECT_TRUE(binds[1].failed());
  // What bindsnoop gets wrong: the requested address, not the zeroed socket's 0.0.0.0:0.
  EXPECT_EQ(binds[1].requested, ep("127.0.0.1", 9090));
  EXPECT_EQ(binds[1].local, ep("0.0.0.0", 0));
  EXPECT_FALSE(binds[1].opts->reuseaddr);
  EXPECT_EQ(trace->drops().total(), 0U);
}

TEST_F(TraceKernelTest, EverySocketOptionIsReadFromTheKernelSocket) {
  // The options come from struct sock (inet_flags bits on 6.6+): set each one for real.
  PORTLENS_START_TRACE(trace, config_for(ns()));
  const int rc = ns().run([] {
    TestSocket s(AF_INET, SOCK_STREAM);
    s.reuseaddr().reuseport();
    const int one = 1;
    const char lo[] = "lo";
    for (const int name : {IP_FREEBIND, IP_TRANSPARENT, IP_BIND_ADDRESS_NO_PORT}) {
      if (setsockopt(s.fd(), IPPROTO_IP, name, &one, sizeof one) != 0) {
        return errno;
      }
    }
    if (setsockopt(s.fd(), SOL_SOCKET, SO_BINDTODEVICE, lo, sizeof lo) != 0) {
      return errno;
    }
    return s.bind("192.0.2.1", 8443);  // not local: allowed only thanks to IP_FREEBIND
  });
  ASSERT_EQ(rc, 0);
  ASSERT_TRUE(trace->wait_for([](const auto& ev) { return has_calls(ev, EventType::kBind, 1); }));
  const Event e = calls_of(trace->events(), EventType::kBind).at(0);
  ASSERT_TRUE(e.opts.has_value());
  EXPECT_TRUE(e.opts->reuseaddr);
  EXPECT_TRUE(e.opts->reuseport);
  EXPECT_TRUE(e.opts->freebind);
  EXPECT_TRUE(e.opts->transparent);
  EXPECT_TRUE(e.opts->bind_address_no_port);
  EXPECT_EQ(e.opts->bound_dev_if, 1);  // lo is ifindex 1 in a new namespace
  EXPECT_FALSE(e.opts->v6only);
  EXPECT_EQ(e.requested, ep("192.0.2.1", 8443));
}

TEST_F(TraceKernelTest, OptionsOffAreReportedOff) {
  PORTLENS_START_TRACE(trace, config_for(ns()));
  ASSERT_EQ(ns().run([] { return TestSocket(AF_INET, SOCK_DGRAM).bind("127.0.0.1", 8444); }), 0);
  ASSERT_TRUE(trace->wait_for([](const auto& ev) { return has_calls(ev, EventType::kBind, 1); }));
  const Event e = calls_of(trace->events(), EventType::kBind).at(0);
  ASSERT_TRUE(e.opts.has_value());
  EXPECT_EQ(*e.opts, SocketOptions{});
}

TEST_F(TraceKernelTest, TcpAndUdpOnTheSamePortBothSucceed) {
  PORTLENS_START_TRACE(trace, config_for(ns()));
  const auto [tcp, udp] = ns().run([] {
    TestSocket t(AF_INET, SOCK_STREAM);
    TestSocket u(AF_INET, SOCK_DGRAM);
    const int r1 = t.bind("0.0.0.0", 5353);
    const int r2 = u.bind("0.0.0.0", 5353);
    return std::pair{r1, r2};
  });
  ASSERT_EQ(tcp, 0);
  ASSERT_EQ(udp, 0);
  ASSERT_TRUE(trace->wait_for([](const auto& ev) { return has_calls(ev, EventType::kBind, 2); }));
  const auto binds = calls_of(trace->events(), EventType::kBind);
  EXPECT_EQ(binds[0].proto, Proto::kTcp);
  EXPECT_EQ(binds[1].proto, Proto::kUdp);
  EXPECT_EQ(binds[1].sock_type, SOCK_DGRAM);
  for (const auto& b : binds) {
    EXPECT_EQ(b.result, 0);
    EXPECT_EQ(b.requested, ep("0.0.0.0", 5353));
  }
}

TEST_F(TraceKernelTest, Ipv6BindWithV6only) {
  PORTLENS_START_TRACE(trace, config_for(ns()));
  const int rc = ns().run([] {
    TestSocket s(AF_INET6, SOCK_STREAM);
    return s.v6only().bind("::", 7070);
  });
  ASSERT_EQ(rc, 0);
  ASSERT_TRUE(trace->wait_for([](const auto& ev) { return has_calls(ev, EventType::kBind, 1); }));
  const Event e = calls_of(trace->events(), EventType::kBind).at(0);
  EXPECT_EQ(e.family, Family::kIpv6);
  EXPECT_EQ(e.requested, ep("::", 7070));
  ASSERT_TRUE(e.opts.has_value());
  EXPECT_TRUE(e.opts->v6only);
}

TEST_F(TraceKernelTest, V4MappedRequestOnAnIpv6Socket) {
  PORTLENS_START_TRACE(trace, config_for(ns()));
  const int rc = ns().run([] {
    TestSocket s(AF_INET6, SOCK_STREAM);
    return s.bind("::ffff:127.0.0.1", 7171);
  });
  ASSERT_EQ(rc, 0);
  ASSERT_TRUE(trace->wait_for([](const auto& ev) { return has_calls(ev, EventType::kBind, 1); }));
  const Event e = calls_of(trace->events(), EventType::kBind).at(0);
  ASSERT_TRUE(e.requested.has_value());
  EXPECT_TRUE(e.requested->addr.is_v4_mapped());
  EXPECT_EQ(e.requested->addr.unmapped(), *IpAddress::parse("127.0.0.1"));
  EXPECT_FALSE(e.opts->v6only);  // a mapped address does not make the socket v6only
}

TEST_F(TraceKernelTest, SecondListenOnSharedReuseaddrBindFailsWithEaddrinuse) {
  PORTLENS_START_TRACE(trace, config_for(ns()));
  const auto results = ns().run([] {
    TestSocket a(AF_INET, SOCK_STREAM);
    TestSocket b(AF_INET, SOCK_STREAM);
    a.reuseaddr();
    b.reuseaddr();
    return std::array<int, 4>{a.bind("127.0.0.1", 6000), b.bind("127.0.0.1", 6000), a.listen(),
                              b.listen()};
  });
  ASSERT_EQ(results, (std::array<int, 4>{0, 0, 0, EADDRINUSE}));
  ASSERT_TRUE(trace->wait_for([](const auto& ev) { return has_calls(ev, EventType::kListen, 2); }));
  const auto listens = calls_of(trace->events(), EventType::kListen);
  EXPECT_EQ(listens[0].result, 0);
  EXPECT_EQ(listens[1].result, -EADDRINUSE);
  EXPECT_EQ(listens[1].local, ep("127.0.0.1", 6000));  // listen names its socket's address
  EXPECT_EQ(listens[1].backlog, 16);
  EXPECT_TRUE(listens[1].opts->reuseaddr);
  EXPECT_NE(listens[0].sock_id, listens[1].sock_id);
}

TEST_F(TraceKernelTest, ConnectFailsWithEaddrnotavailWhenTheNarrowedRangeIsFull) {
  ns().sysctl("net.ipv4.ip_local_port_range", "40000 40003");
  PORTLENS_START_TRACE(trace, config_for(ns()));
  const auto results = ns().run([] {
    TestSocket server(AF_INET, SOCK_STREAM);
    std::vector<int> rcs{server.bind("127.0.0.1", 5000), server.listen(64)};
    std::vector<TestSocket> clients;
    for (int i = 0; i < 5; ++i) {  // four ports, five connections
      clients.emplace_back(AF_INET, SOCK_STREAM);
      rcs.push_back(clients.back().connect("127.0.0.1", 5000));
    }
    return rcs;
  });
  ASSERT_EQ(results, (std::vector<int>{0, 0, 0, 0, 0, 0, EADDRNOTAVAIL}));
  ASSERT_TRUE(
      trace->wait_for([](const auto& ev) { return has_calls(ev, EventType::kConnect, 5); }));
  const auto connects = calls_of(trace->events(), EventType::kConnect);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(connects[i].result, 0);
    ASSERT_TRUE(connects[i].local.has_value());
    EXPECT_GE(connects[i].local->port, 40000);  // the source port the kernel picked
    EXPECT_LE(connects[i].local->port, 40003);
    EXPECT_EQ(connects[i].enter_port, 0);  // not bound before connect()
  }
  EXPECT_EQ(connects[4].result, -EADDRNOTAVAIL);
  EXPECT_EQ(connects[4].requested, ep("127.0.0.1", 5000));
  EXPECT_EQ(connects[4].local->port, 0);
  EXPECT_EQ(trace->drops().total(), 0U);
}

TEST_F(TraceKernelTest, ActiveCloserSeesFinWait2ToClose) {
  PORTLENS_START_TRACE(trace, config_for(ns(), /*states=*/true));
  const std::uint16_t client_port = ns().run([] {
    TestSocket server(AF_INET, SOCK_STREAM);
    server.bind("127.0.0.1", 4000);
    server.listen();
    TestSocket client(AF_INET, SOCK_STREAM);
    client.connect("127.0.0.1", 4000);
    const int accepted = server.accept_one();
    const std::uint16_t port = client.local_port();
    client.close();  // the client closes first: FIN_WAIT1, FIN_WAIT2
    if (accepted >= 0) {
      ::close(accepted);  // then the server: the client's FIN_WAIT2 -> TIME_WAIT (CLOSE)
    }
    return port;
  });
  ASSERT_NE(client_port, 0);
  const auto client_states = [client_port](const std::vector<Event>& ev) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& e : ev) {
      if (e.type == EventType::kState && e.local && e.local->port == client_port) {
        out.emplace_back(state_name(e.old_state), state_name(e.new_state));
      }
    }
    return out;
  };
  ASSERT_TRUE(trace->wait_for([&](const auto& ev) { return client_states(ev).size() >= 4; }));
  trace->drain();
  using P = std::pair<std::string, std::string>;
  // CLOSE->SYN_SENT is reported before the port is chosen (sport 0), so it is not in this list.
  EXPECT_EQ(client_states(trace->events()), (std::vector<P>{{"SYN_SENT", "ESTABLISHED"},
                                                            {"ESTABLISHED", "FIN_WAIT1"},
                                                            {"FIN_WAIT1", "FIN_WAIT2"},
                                                            {"FIN_WAIT2", "CLOSE"}}));
  // The passive side: CLOSE_WAIT, LAST_ACK, CLOSE, on the server's port.
  std::vector<P> server_side;
  for (const auto& e : trace->events()) {
    if (e.type == EventType::kState && e.remote && e.remote->port == client_port) {
      server_side.emplace_back(state_name(e.old_state), state_name(e.new_state));
    }
  }
  EXPECT_EQ(server_side, (std::vector<P>{{"LISTEN", "SYN_RECV"},
                                         {"SYN_RECV", "ESTABLISHED"},
                                         {"ESTABLISHED", "CLOSE_WAIT"},
                                         {"CLOSE_WAIT", "LAST_ACK"},
                                         {"LAST_ACK", "CLOSE"}}));
  EXPECT_EQ(trace->drops().total(), 0U);
}

TEST_F(TraceKernelTest, ClosingABoundOnlySocketIsSeenAsDestroy) {
  // A bound, never-listening socket changes no TCP state when closed: only tcp_destroy_sock
  // tells the tracker that its port is free again.
  PORTLENS_START_TRACE(trace, config_for(ns(), /*states=*/true));
  ASSERT_EQ(ns().run([] { return TestSocket(AF_INET, SOCK_STREAM).bind("127.0.0.1", 4100); }), 0);
  const auto destroyed = [](const std::vector<Event>& ev) {
    return calls_of(ev, EventType::kDestroy);
  };
  ASSERT_TRUE(trace->wait_for([&](const auto& ev) { return !destroyed(ev).empty(); }));
  const Event bind = calls_of(trace->events(), EventType::kBind).at(0);
  const Event destroy = destroyed(trace->events()).at(0);
  EXPECT_EQ(destroy.sock_id, bind.sock_id);
  EXPECT_EQ(destroy.local, ep("127.0.0.1", 4100));
  EXPECT_TRUE(calls_of(trace->events(), EventType::kState).empty());
}

// Closes a loopback connection client-first and returns whether its FIN_WAIT2->CLOSE event
// (the start of its TIME_WAIT) said the connection carried TCP timestamps.
std::optional<bool> time_wait_timestamps(NetnsSandbox& ns, TraceSession& trace) {
  const std::uint16_t client_port = ns.run([] {
    TestSocket server(AF_INET, SOCK_STREAM);
    server.bind("127.0.0.1", 4200);
    server.listen();
    TestSocket client(AF_INET, SOCK_STREAM);
    client.connect("127.0.0.1", 4200);
    const int accepted = server.accept_one();
    const std::uint16_t port = client.local_port();
    client.close();
    ::close(accepted);
    return port;
  });
  const auto into_time_wait = [client_port](const std::vector<Event>& ev) -> const Event* {
    for (const auto& e : ev) {
      if (e.type == EventType::kState && e.local && e.local->port == client_port &&
          e.old_state == static_cast<int>(TcpState::kFinWait2) &&
          e.new_state == static_cast<int>(TcpState::kClose)) {
        return &e;
      }
    }
    return nullptr;
  };
  if (!trace.wait_for([&](const auto& ev) { return into_time_wait(ev) != nullptr; })) {
    return std::nullopt;
  }
  return into_time_wait(trace.events())->timestamps;
}

TEST_F(TraceKernelTest, TimeWaitStartKnowsWhetherTheConnectionUsedTimestamps) {
  PORTLENS_START_TRACE(trace, config_for(ns(), /*states=*/true));
  // Linux negotiates TCP timestamps on loopback by default (net.ipv4.tcp_timestamps=1).
  EXPECT_EQ(time_wait_timestamps(ns(), *trace), std::optional<bool>(true));

  NetnsSandbox no_ts;
  no_ts.sysctl("net.ipv4.tcp_timestamps", "0");
  PORTLENS_START_TRACE(trace2, config_for(no_ts, /*states=*/true));
  EXPECT_EQ(time_wait_timestamps(no_ts, *trace2), std::optional<bool>(false));
}

TEST_F(TraceKernelTest, NetnsFilterKeepsOnlyThatNamespace) {
  NetnsSandbox other;
  TracerConfig unfiltered;
  unfiltered.tcp_states = false;
  PORTLENS_START_TRACE(filtered, config_for(ns()));
  PORTLENS_START_TRACE(everything, unfiltered);
  ns().run([] { TestSocket(AF_INET, SOCK_STREAM).bind("127.0.0.1", 1111); });
  other.run([] { TestSocket(AF_INET, SOCK_STREAM).bind("127.0.0.1", 2222); });

  const auto bound_in = [](const std::vector<Event>& ev, std::uint32_t netns) {
    std::size_t n = 0;
    for (const auto& e : ev) {
      n += e.type == EventType::kBind && e.netns == netns ? 1 : 0;
    }
    return n;
  };
  // The unfiltered tracer proves the other namespace's bind happened and was visible.
  ASSERT_TRUE(
      everything->wait_for([&](const auto& ev) { return bound_in(ev, other.inode()) == 1; }));
  ASSERT_TRUE(filtered->wait_for([&](const auto& ev) { return bound_in(ev, ns().inode()) == 1; }));
  filtered->drain();
  EXPECT_EQ(bound_in(filtered->events(), other.inode()), 0U);
  for (const auto& e : filtered->events()) {
    EXPECT_EQ(e.netns, ns().inode());
  }
}

TEST_F(TraceKernelTest, PidFilterKeepsOnlyThatProcess) {
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  const std::string ns_path = ns().path();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Only async-signal-safe calls after fork() in a threaded parent.
    char c = 0;
    ::close(go[1]);
    if (read(go[0], &c, 1) != 1) _exit(3);
    const int nsfd = open(ns_path.c_str(), O_RDONLY);
    if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) != 0) _exit(4);
    const int s = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(3333);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    _exit(bind(s, reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0 ? 0 : 5);
  }
  ::close(go[0]);
  TracerConfig config = config_for(ns());
  config.pid_filter = static_cast<std::uint32_t>(child);
  std::string why;
  auto trace = try_trace(config, &why);
  if (!trace) {
    ::close(go[1]);
    waitpid(child, nullptr, 0);
    if (bpf_required()) {
      FAIL() << why;
    }
    GTEST_SKIP() << why;
  }
  // This process binds too, in the same namespace: the filter must hide it.
  ASSERT_EQ(ns().run([] { return TestSocket(AF_INET, SOCK_STREAM).bind("127.0.0.1", 4444); }), 0);
  ASSERT_EQ(write(go[1], "x", 1), 1);
  ::close(go[1]);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  ASSERT_TRUE(trace->wait_for([](const auto& ev) { return has_calls(ev, EventType::kBind, 1); }));
  trace->drain();
  const auto binds = calls_of(trace->events(), EventType::kBind);
  ASSERT_EQ(binds.size(), 1U);
  EXPECT_EQ(binds[0].pid, static_cast<std::uint32_t>(child));
  EXPECT_EQ(binds[0].requested, ep("127.0.0.1", 3333));
}

TEST_F(TraceKernelTest, LostEventsAreCountedNeverSilent) {
  // One page of ring buffer holds about twenty events; make far more without reading.
  TracerConfig config = config_for(ns());
  config.ring_bytes = 4096;
  PORTLENS_START_TRACE(trace, config);
  constexpr int kBinds = 300;
  const int ok = ns().run([] {
    int n = 0;
    for (int i = 0; i < kBinds; ++i) {
      TestSocket s(AF_INET, SOCK_DGRAM);
      n += s.bind("127.0.0.1", 0) == 0 ? 1 : 0;
    }
    return n;
  });
  ASSERT_EQ(ok, kBinds);
  trace->drain();
  const auto delivered = calls_of(trace->events(), EventType::kBind).size();
  const DropCounters drops = trace->drops();
  EXPECT_GT(drops.ringbuf_full, 0U);
  EXPECT_LT(delivered, static_cast<std::size_t>(kBinds));
  // Every call is accounted for: delivered or counted as lost, exactly.
  EXPECT_EQ(delivered + drops.total(), static_cast<std::size_t>(kBinds));
}

}  // namespace
}  // namespace portlens::testing
