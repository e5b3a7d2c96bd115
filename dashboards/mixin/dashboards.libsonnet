// The Grafana dashboard "portlens / Ports and TIME_WAIT", rendered to
// dashboards/portlens-overview.json and into deploy/kubernetes/base/dashboard-configmap.yaml by
// render.sh. dashboards/README.md describes what it shows; tests/unit/dashboard_test.cpp checks
// the rendered JSON's structure and tests/kernel/prometheus_e2e_test.cpp runs every query.
//
// Every query filters on `cluster=~"$cluster", job=~"$job", instance=~"$instance"` (the label
// behind $cluster is $._config.clusterLabel), written `%(f)s` below and filled in by q(). The
// cluster variable's "All" is `.*`, which also matches series without the label, so the
// dashboard works unchanged on a Prometheus that has no cluster label at all.
local p = import 'lib/panels.libsonnet';

local fold(text) = std.join(' ', std.filter(function(line) line != '', std.split(text, '\n')));

{
  local c = $._config,
  local filter = '%s=~"$cluster", job=~"$job", instance=~"$instance"' % c.clusterLabel,
  local q(expr) = expr % { f: filter },
  local util = p.utilizationThresholds(c.ephemeralUtilizationWarning, c.ephemeralUtilizationCritical),
  local datasource = { type: 'prometheus', uid: '${datasource}' },

  local queryVariable(name, label, query, hide=0) = {
    name: name,
    label: label,
    type: 'query',
    datasource: datasource,
    query: query,
    definition: query,
    refresh: 2,  // on time range change: agents come and go
    multi: true,
    includeAll: true,
    allValue: '.*',
    current: {},
    options: [],
    regex: '',
    sort: 1,
    hide: hide,
  },

  local panels = [
    p.row('Port exhaustion', 0),
    p.stat(
      'Max ephemeral port utilization',
      fold(|||
        The worst ephemeral port utilization of each instance: the highest share (0..1) of the
        usable local ports toward any one destination that connect() cannot take now (in use,
        minus TIME_WAIT it could reuse), over every network namespace and every destination, none
        left out, as its peak since the previous scrape
        (portlens_ephemeral_port_utilization_peak_ratio): a burst that ran out of ports and ended
        between two scrapes still shows 100 %. Orange from 80 %, red from 95 %: at 100 % connect()
        to that destination fails with EADDRNOTAVAIL (cause ephemeral_exhausted). The rows below
        name the destination.
      |||),
      p.pos(0, 1, 6, 8),
      [
        p.target(q('max by (instance) (portlens_ephemeral_port_utilization_peak_ratio{%(f)s})'), '{{instance}}'),
      ],
      unit='percentunit',
      thresholds=util,
      colorMode='background',
    ),
    p.timeseries(
      'Ephemeral port utilization by instance and namespace',
      fold(|||
        Highest ephemeral port utilization (0..1) over every destination, per instance and network
        namespace (netns is the namespace inode; the host's is usually 4026531840 or near it),
        over time. A line that climbs toward the red band is a client running out of local ports
        toward one destination; a steady line under 80 % is fine. The peak line is the highest
        since the previous scrape, so a burst between scrapes (one that made a connect() fail)
        shows as a spike to 100 % the current line never reaches.
      |||),
      p.pos(6, 1, 18, 8),
      [
        p.target(q('max by (instance, netns) (portlens_ephemeral_port_utilization_max_ratio{%(f)s})'), '{{instance}} netns {{netns}}'),
        p.target(q('max by (instance, netns) (portlens_ephemeral_port_utilization_peak_ratio{%(f)s})'), 'peak {{instance}} netns {{netns}}'),
      ],
      unit='percentunit',
      calcs=['mean', 'max', 'lastNotNull'],
      thresholds=util,
      thresholdsStyle='line+area',
      max=1,
    ),
    p.timeseries(
      'Top destinations by ephemeral port utilization',
      fold(|||
        The 10 destinations (remote address and port) with the highest ephemeral port utilization
        (0..1) at each point in time, over the selected instances. Only the agent's top-k
        destinations per namespace have a series (--top-k, default 20), which always includes the
        worst one. Read it with the table on the right, which adds the port counts.
      |||),
      p.pos(0, 9, 12, 9),
      [
        p.target(q('topk(10, max by (instance, netns, remote_addr, remote_port) (portlens_ephemeral_port_utilization_ratio{%(f)s}))'), '{{remote_addr}}:{{remote_port}} ({{instance}})'),
      ],
      unit='percentunit',
      calcs=['mean', 'max', 'lastNotNull'],
      thresholds=util,
      thresholdsStyle='line+area',
      max=1,
    ),
    p.table(
      'Top destinations now',
      fold(|||
        The 20 destinations with the highest ephemeral port utilization right now, one row each.
        Utilization = (in use - reusable TIME_WAIT) / capacity. In use counts every local port
        held toward the destination, TIME_WAIT included; capacity is the local port range less
        reserved ports and ports held by bind()/listen(), summed over local source addresses;
        reusable TIME_WAIT is what tcp_tw_reuse would let connect() take over. A high utilization
        with many reusable ports means short-lived connections: pool or keep them alive.
      |||),
      p.pos(12, 9, 12, 9),
      [
        p.tableTarget(q('topk(20, max by (job, instance, netns, remote_addr, remote_port) (portlens_ephemeral_port_utilization_ratio{%(f)s}))')),
        p.tableTarget(q('max by (job, instance, netns, remote_addr, remote_port) (portlens_ephemeral_ports_in_use{%(f)s}) and topk(20, max by (job, instance, netns, remote_addr, remote_port) (portlens_ephemeral_port_utilization_ratio{%(f)s}))')),
        p.tableTarget(q('max by (job, instance, netns, remote_addr, remote_port) (portlens_ephemeral_ports_time_wait_reusable{%(f)s}) and topk(20, max by (job, instance, netns, remote_addr, remote_port) (portlens_ephemeral_port_utilization_ratio{%(f)s}))')),
        p.tableTarget(q('max by (job, instance, netns, remote_addr, remote_port) (portlens_ephemeral_ports_capacity{%(f)s}) and topk(20, max by (job, instance, netns, remote_addr, remote_port) (portlens_ephemeral_port_utilization_ratio{%(f)s}))')),
      ],
      [
        { id: 'merge', options: {} },
        {
          id: 'organize',
          options: {
            excludeByName: { Time: true, job: true },
            renameByName: {
              remote_addr: 'Destination',
              remote_port: 'Port',
              instance: 'Instance',
              netns: 'Netns',
              'Value #A': 'Utilization',
              'Value #B': 'In use',
              'Value #C': 'Reusable TIME_WAIT',
              'Value #D': 'Capacity',
            },
            indexByName: {
              remote_addr: 0,
              remote_port: 1,
              'Value #A': 2,
              'Value #B': 3,
              'Value #C': 4,
              'Value #D': 5,
              instance: 6,
              netns: 7,
            },
          },
        },
      ],
      [{ displayName: 'Utilization', desc: true }],
      overrides=[
        {
          matcher: { id: 'byName', options: 'Utilization' },
          properties: [
            { id: 'unit', value: 'percentunit' },
            {
              id: 'thresholds',
              value: util,
            },
            {
              id: 'custom.cellOptions',
              value: { type: 'color-background', mode: 'basic' },
            },
          ],
        },
      ],
    ),
    p.timeseries(
      'Ephemeral ports in use vs capacity, top 5 destinations',
      fold(|||
        For the 5 destinations with the highest utilization: local ports in use toward them
        (solid, TIME_WAIT included), the ports of those that are TIME_WAIT connect() may reuse now
        (tcp_tw_reuse), and the capacity (dashed: ports connect() can use toward the destination).
        The dotted line is the size of net.ipv4.ip_local_port_range per namespace; capacity is
        lower when ports are reserved or held by listeners. When in use minus reusable meets
        capacity, connect() fails.
      |||),
      p.pos(0, 18, 24, 9),
      [
        p.target(q('portlens_ephemeral_ports_in_use{%(f)s} and topk(5, portlens_ephemeral_port_utilization_ratio{%(f)s})'), 'in use {{remote_addr}}:{{remote_port}} ({{instance}})'),
        p.target(q('portlens_ephemeral_ports_time_wait_reusable{%(f)s} and topk(5, portlens_ephemeral_port_utilization_ratio{%(f)s})'), 'reusable TIME_WAIT {{remote_addr}}:{{remote_port}} ({{instance}})'),
        p.target(q('portlens_ephemeral_ports_capacity{%(f)s} and topk(5, portlens_ephemeral_port_utilization_ratio{%(f)s})'), 'capacity {{remote_addr}}:{{remote_port}} ({{instance}})'),
        p.target(q('max by (instance, netns) (portlens_ephemeral_port_range_size{%(f)s})'), 'port range {{instance}} netns {{netns}}'),
      ],
      axis='ports',
      calcs=['lastNotNull', 'max'],
      overrides=[
        {
          matcher: { id: 'byRegexp', options: '^capacity .*' },
          properties: [{ id: 'custom.lineStyle', value: { fill: 'dash', dash: [10, 10] } }],
        },
        {
          matcher: { id: 'byRegexp', options: '^port range .*' },
          properties: [{ id: 'custom.lineStyle', value: { fill: 'dot', dash: [0, 10] } }],
        },
      ],
    ),
    p.row('TIME_WAIT', 27),
    p.stat(
      'TIME_WAIT sockets',
      fold(|||
        TCP sockets in TIME_WAIT now, summed over the selected instances and all their network
        namespaces (what `ss -tan state time-wait` counts on each host). TIME_WAIT is normal on
        the side that closes first and lasts 60 s; a large number only matters when it pins the
        local ports a client needs (see Port exhaustion) or a port a server wants to bind again.
      |||),
      p.pos(0, 28, 6, 8),
      [
        p.target(q('sum(portlens_tcp_sockets{%(f)s, state="TIME_WAIT"})'), 'TIME_WAIT'),
      ],
    ),
    p.timeseries(
      'TCP sockets by state',
      fold(|||
        TCP sockets per state, summed over the selected instances and namespaces, as ss names the
        states; bound-only sockets count as CLOSE. TIME_WAIT growing with ESTABLISHED flat means
        many short connections closed by this side; CLOSE_WAIT growing means an application that
        does not close the sockets its peers closed.
      |||),
      p.pos(6, 28, 18, 8),
      [
        p.target(q('sum by (state) (portlens_tcp_sockets{%(f)s})'), '{{state}}'),
      ],
      axis='sockets',
      calcs=['lastNotNull', 'max'],
    ),
    p.timeseries(
      'TIME_WAIT by local port (top 10)',
      fold(|||
        TIME_WAIT sockets per local port, the 10 largest. A server port here (e.g. 443) means the
        server closes first; many scattered high ports are the ephemeral ports of outgoing
        connections. The agent keeps the top-k ports per namespace and sums the rest under
        local_port="other".
      |||),
      p.pos(0, 36, 12, 9),
      [
        p.target(q('topk(10, sum by (instance, local_port) (portlens_time_wait_sockets{%(f)s}))'), 'port {{local_port}} ({{instance}})'),
      ],
      axis='sockets',
      calcs=['lastNotNull', 'max'],
    ),
    p.timeseries(
      'TIME_WAIT by destination (top 10)',
      fold(|||
        TIME_WAIT sockets per remote address and port, the 10 largest: the peers this host keeps
        opening and closing short connections to. The agent keeps the top-k destinations per
        namespace and sums the rest under remote_addr="other". Compare with the port utilization
        of the same destination above.
      |||),
      p.pos(12, 36, 12, 9),
      [
        p.target(q('topk(10, sum by (instance, remote_addr, remote_port) (portlens_time_wait_sockets_by_remote{%(f)s}))'), '{{remote_addr}}:{{remote_port}} ({{instance}})'),
      ],
      axis='sockets',
      calcs=['lastNotNull', 'max'],
    ),
    p.row('Failures', 45),
    p.timeseries(
      'bind/listen failures by cause',
      fold(|||
        Failed bind() and listen() calls per second, by syscall and the cause portlens diagnosed
        (port_in_use, time_wait, missing_reuseaddr, wildcard_conflict, ephemeral_exhausted, ...;
        `portlens explain CAUSE` explains each). Any sustained rate here is a service that cannot
        start or restart cleanly.
      |||),
      p.pos(0, 46, 12, 8),
      [
        p.target(q('sum by (syscall, cause) (rate(portlens_bind_failures_total{%(f)s}[$__rate_interval]))'), '{{syscall}} {{cause}}'),
      ],
      axis='failures/s',
    ),
    p.timeseries(
      'bind/listen failures by process',
      fold(|||
        Failed bind() and listen() calls per second by process name (comm); process names beyond
        the agent's top-k are summed under comm="other". Tells which program hits the failures
        shown on the left.
      |||),
      p.pos(12, 46, 12, 8),
      [
        p.target(q('sum by (comm) (rate(portlens_bind_failures_total{%(f)s}[$__rate_interval]))'), '{{comm}}'),
      ],
      axis='failures/s',
    ),
    p.timeseries(
      'connect failures by cause',
      fold(|||
        Failed connect() calls per second by diagnosed cause and errno. ephemeral_exhausted
        (EADDRNOTAVAIL) means no local port was left toward that destination: see Port exhaustion;
        four_tuple_in_use is a connect() from a fixed, already bound port. Errors that are not
        about ports (e.g. ECONNREFUSED from a blocking connect()) show cause unknown with their
        errno.
      |||),
      p.pos(0, 54, 12, 8),
      [
        p.target(q('sum by (cause, errno) (rate(portlens_connect_failures_total{%(f)s}[$__rate_interval]))'), '{{cause}} ({{errno}})'),
      ],
      axis='failures/s',
    ),
    p.timeseries(
      'connect failures by process',
      fold(|||
        Failed connect() calls per second by process name (comm), the rest summed under
        comm="other". The series exist only once a connect() failed on that instance, so an empty
        panel means no failure.
      |||),
      p.pos(12, 54, 12, 8),
      [
        p.target(q('sum by (comm) (rate(portlens_connect_failures_total{%(f)s}[$__rate_interval]))'), '{{comm}}'),
      ],
      axis='failures/s',
    ),
    p.table(
      'Failure causes',
      fold(|||
        Every failing (syscall, cause, process) combination of the selected instances, with the
        failures in the selected time range and since the agents started. In range comes from
        increase(), which cannot see a series' first failure when the series was born inside the
        range (the counter appears at 1): a one-off failure shows only in the since-start column.
        The newest failures with their blockers are in the agent's event log and in `portlens why
        PORT`.
      |||),
      p.pos(0, 62, 24, 9),
      [
        p.tableTarget(q('sum by (proto, syscall, cause, comm) (increase(portlens_bind_failures_total{%(f)s}[$__range])) > 0 or sum by (proto, syscall, errno, cause, comm) (label_replace(increase(portlens_connect_failures_total{%(f)s}[$__range]), "syscall", "connect", "", "")) > 0')),
        p.tableTarget(q('sum by (proto, syscall, cause, comm) (portlens_bind_failures_total{%(f)s}) or sum by (proto, syscall, errno, cause, comm) (label_replace(portlens_connect_failures_total{%(f)s}, "syscall", "connect", "", ""))')),
      ],
      [
        { id: 'merge', options: {} },
        {
          id: 'organize',
          options: {
            excludeByName: { Time: true },
            renameByName: {
              syscall: 'Syscall',
              cause: 'Cause',
              errno: 'Errno',
              comm: 'Process',
              proto: 'Proto',
              'Value #A': 'In range',
              'Value #B': 'Since agent start',
            },
            indexByName: {
              syscall: 0,
              cause: 1,
              errno: 2,
              comm: 3,
              proto: 4,
              'Value #A': 5,
              'Value #B': 6,
            },
          },
        },
      ],
      [{ displayName: 'In range', desc: true }],
      overrides=[
        {
          matcher: { id: 'byName', options: 'In range' },
          properties: [{ id: 'decimals', value: 0 }],
        },
      ],
    ),
    p.row('TCP state transitions', 71),
    p.timeseries(
      'TCP state transitions',
      fold(|||
        TCP state changes per second by old and new state, summed over the selected instances, as
        the kernel reports them (sock:inet_sock_set_state). There is no -> TIME_WAIT line: the
        kernel hands a closing connection to a separate TIME_WAIT socket and the original goes to
        CLOSE (typically FIN_WAIT2 -> CLOSE). A sudden change in the mix points at a client or
        server behaving differently.
      |||),
      p.pos(0, 72, 24, 9),
      [
        p.target(q('sum by (from, to) (rate(portlens_tcp_state_transitions_total{%(f)s}[$__rate_interval]))'), '{{from}} -> {{to}}'),
      ],
      axis='transitions/s',
      calcs=['mean', 'max', 'lastNotNull'],
    ),
    p.timeseries(
      'Connections opened',
      fold(|||
        New connections per second per instance: outgoing (CLOSE -> SYN_SENT, a connect()) and
        incoming (LISTEN -> SYN_RECV, a SYN at a listener). Outgoing connection churn is what
        consumes ephemeral ports. Self-connects are connect()s the kernel connected to
        themselves (the local port it chose was the destination's): should be 0.
      |||),
      p.pos(0, 81, 12, 8),
      [
        p.target(q('sum by (instance) (rate(portlens_tcp_state_transitions_total{%(f)s, from="CLOSE", to="SYN_SENT"}[$__rate_interval]))'), 'outgoing {{instance}}'),
        p.target(q('sum by (instance) (rate(portlens_tcp_state_transitions_total{%(f)s, from="LISTEN", to="SYN_RECV"}[$__rate_interval]))'), 'incoming {{instance}}'),
        p.target(q('sum by (instance) (rate(portlens_tcp_self_connects_total{%(f)s}[$__rate_interval]))'), 'self-connects {{instance}}'),
      ],
      axis='connections/s',
    ),
    p.timeseries(
      'Connections closed: active vs passive',
      fold(|||
        Closes per second per instance. Active (-> FIN_WAIT1): this host closed first, so the
        socket ends in TIME_WAIT here. Passive (-> CLOSE_WAIT): the peer closed first and the
        TIME_WAIT is on the peer. Many active closes explain a high TIME_WAIT count above.
      |||),
      p.pos(12, 81, 12, 8),
      [
        p.target(q('sum by (instance) (rate(portlens_tcp_state_transitions_total{%(f)s, to="FIN_WAIT1"}[$__rate_interval]))'), 'active {{instance}}'),
        p.target(q('sum by (instance) (rate(portlens_tcp_state_transitions_total{%(f)s, to="CLOSE_WAIT"}[$__rate_interval]))'), 'passive {{instance}}'),
      ],
      axis='closes/s',
    ),
    p.timeseries(
      'Connections ended, by how',
      fold(|||
        TCP connections ending per second, per network namespace and kind
        (portlens_tcp_closes_total): fin_time_wait, a FIN close that left a TIME_WAIT here (this
        side closed first); fin_no_time_wait, a FIN close that left none (the peer closed first,
        or tcp_max_tw_buckets was reached); rst_sent, this side reset the connection (close()
        with unread data, SO_LINGER 0, an abort); rst_received, the peer reset it; other,
        neither was seen (a timeout). Resets leave no TIME_WAIT but lose data in flight.
      |||),
      p.pos(0, 89, 24, 8),
      [
        p.target(q('sum by (instance, netns, kind) (rate(portlens_tcp_closes_total{%(f)s}[$__rate_interval]))'), '{{instance}} netns {{netns}} {{kind}}'),
      ],
      axis='closes/s',
    ),
    p.timeseries(
      'CLOSE_WAIT by owner and port',
      fold(|||
        TCP sockets in CLOSE_WAIT per owner (comm) and local port (portlens_close_wait_sockets):
        the peer closed and the process has not. A line that only climbs is a process that
        never closes connections its peers ended (the panel beside it shows how long the oldest
        of each group has waited).
      |||),
      p.pos(0, 97, 16, 8),
      [
        p.target(q('sum by (instance, netns, comm, local_port) (portlens_close_wait_sockets{%(f)s})'), '{{instance}} {{comm}} :{{local_port}} (netns {{netns}})'),
      ],
      axis='sockets',
      calcs=['lastNotNull', 'max'],
    ),
    p.timeseries(
      'Oldest CLOSE_WAIT by owner and port',
      fold(|||
        How long the oldest CLOSE_WAIT socket of each owner and port has been waiting for its
        process to close it (portlens_close_wait_oldest_seconds). Healthy servers close within
        milliseconds; minutes mean the close() never comes.
      |||),
      p.pos(16, 97, 8, 8),
      [
        p.target(q('max by (instance, comm, local_port) (portlens_close_wait_oldest_seconds{%(f)s})'), '{{instance}} {{comm}} :{{local_port}}'),
      ],
      unit='s',
      calcs=['lastNotNull', 'max'],
    ),
    p.row('Accept queues', 105),
    p.timeseries(
      'Accept queue fill by listener',
      fold(|||
        Each TCP listener's accept queue as a share of its limit: connections whose handshake is
        done and that the application has not accept()ed yet, over listen()'s backlog clamped
        to net.core.somaxconn (portlens_listen_queue_length / portlens_listen_queue_limit, read
        from the kernel at each scrape). Near 100% the kernel starts dropping handshakes.
      |||),
      p.pos(0, 106, 12, 8),
      [
        p.target(q('max by (instance, netns, local_addr, local_port) (portlens_listen_queue_length{%(f)s} / (portlens_listen_queue_limit{%(f)s} > 0))'), '{{instance}} {{local_addr}}:{{local_port}} (netns {{netns}})'),
      ],
      unit='percentunit',
      max=1,
      calcs=['lastNotNull', 'max'],
    ),
    p.timeseries(
      'Handshakes dropped (accept queue full)',
      fold(|||
        Completed handshakes the kernel dropped per second because a listener's accept queue was
        full, per network namespace (the namespace's TcpExtListenOverflows,
        portlens_listen_overflows_total). Clients see slow connects: their SYN is retried after
        1, 3, 7 s.
      |||),
      p.pos(12, 106, 12, 8),
      [
        p.target(q('sum by (instance, netns) (rate(portlens_listen_overflows_total{%(f)s}[$__rate_interval]))'), '{{instance}} netns {{netns}}'),
      ],
      unit='ops',
      calcs=['max'],
    ),
    p.row('Agent health', 114),
    p.timeseries(
      'Events processed by type',
      fold(|||
        Kernel events the agents processed per second, by type (bind, listen, connect, state,
        destroy). This is the agent's workload; it follows connection churn on the host.
      |||),
      p.pos(0, 115, 12, 8),
      [
        p.target(q('sum by (type) (rate(portlens_events_total{%(f)s}[$__rate_interval]))'), '{{type}}'),
      ],
      unit='ops',
    ),
    p.timeseries(
      'Lost events',
      fold(|||
        Kernel events lost per second per instance before the agent read them (ring buffer or
        in-flight table full). Should be 0. When not, counts may be off until the next reconcile
        corrects the socket table; raise --ring-buffer-size.
      |||),
      p.pos(12, 115, 6, 8),
      [
        p.target(q('sum by (instance) (rate(portlens_events_lost_total{%(f)s}[$__rate_interval]))'), '{{instance}}'),
      ],
      unit='ops',
      calcs=['max'],
    ),
    p.stat(
      'Agents up',
      fold(|||
        Targets of the selected jobs that Prometheus scraped successfully (up) and that failed
        (down). Down is red from 1: that host's panels are stale or empty.
      |||),
      p.pos(18, 115, 6, 8),
      [
        p.target(q('sum(up{%(f)s})'), 'up'),
        p.target(q('sum(1 - up{%(f)s})'), 'down'),
      ],
      graphMode='none',
      overrides=[
        {
          matcher: { id: 'byName', options: 'down' },
          properties: [
            {
              id: 'thresholds',
              value: {
                mode: 'absolute',
                steps: [{ color: 'green', value: null }, { color: 'red', value: 1 }],
              },
            },
          ],
        },
      ],
    ),
    p.timeseries(
      'Reconcile corrections by kind',
      fold(|||
        Differences per second between the agent's socket table and the periodic sock_diag
        snapshot (--reconcile-interval), by kind. A few after lost events or at start are
        expected; a steady rate means events are being missed and the gauges lag reality.
      |||),
      p.pos(0, 123, 8, 8),
      [
        p.target(q('sum by (kind) (rate(portlens_reconcile_corrections_total{%(f)s}[$__rate_interval]))'), '{{kind}}'),
      ],
      axis='corrections/s',
    ),
    p.timeseries(
      'Evictions by table',
      fold(|||
        Sockets per second the agent could not track because its socket or TIME_WAIT table was
        full. Should be 0; otherwise the socket and TIME_WAIT counts are low.
      |||),
      p.pos(8, 123, 8, 8),
      [
        p.target(q('sum by (table) (rate(portlens_evictions_total{%(f)s}[$__rate_interval]))'), '{{table}}'),
      ],
      axis='evictions/s',
    ),
    p.timeseries(
      'Tracked sockets',
      fold(|||
        Sockets each agent tracks, TIME_WAIT included. It should follow the socket counts of the
        TIME_WAIT row; a line stuck flat at a round number suggests a full table (see evictions).
      |||),
      p.pos(16, 123, 8, 8),
      [
        p.target(q('sum by (instance) (portlens_tracked_sockets{%(f)s})'), '{{instance}}'),
      ],
      axis='sockets',
      calcs=['lastNotNull', 'max'],
    ),
    p.timeseries(
      'Metrics scrape duration',
      fold(|||
        How long each agent took to build its previous /metrics answer. It grows with the number
        of sockets; well under the scrape timeout is fine.
      |||),
      p.pos(0, 131, 12, 8),
      [
        p.target(q('max by (instance) (portlens_scrape_duration_seconds{%(f)s})'), '{{instance}}'),
      ],
      unit='s',
    ),
    p.table(
      'Agent versions and kernels',
      fold(|||
        The portlens release, source revision and compiler (portlens_build_info) and the running
        kernel (portlens_kernel_info) of each selected instance. Useful when one host behaves
        differently from the others.
      |||),
      p.pos(12, 131, 12, 8),
      [
        p.tableTarget(q('portlens_build_info{%(f)s} * on (instance, job) group_left (release) portlens_kernel_info{%(f)s}')),
      ],
      [
        {
          id: 'organize',
          options: {
            excludeByName: { Time: true, Value: true, __name__: true },
            renameByName: {
              instance: 'Instance',
              job: 'Job',
              version: 'Version',
              revision: 'Revision',
              compiler: 'Compiler',
              release: 'Kernel',
            },
            indexByName: { instance: 0, job: 1, version: 2, revision: 3, compiler: 4, release: 5 },
          },
        },
      ],
      [{ displayName: 'Instance', desc: false }],
    ),
    p.timeseries(
      'Records and findings dropped',
      fold(|||
        What the agent had to drop besides lost ring events: ring records it could not decode (an
        ABI mismatch or a bug), diagnosed failures the event log could not write (disk full, file
        gone) or had no room to queue (its reader too slow), and sockets whose owner the /proc map had no room for. Each should stay at zero.
      |||),
      p.pos(0, 139, 24, 8),
      [
        p.target(q('sum by (instance) (rate(portlens_events_malformed_total{%(f)s}[$__rate_interval]))'), '{{instance}} malformed records'),
        p.target(q('sum by (instance) (rate(portlens_event_log_write_failures_total{%(f)s}[$__rate_interval]))'), '{{instance}} event log write failures'),
        p.target(q('sum by (instance) (rate(portlens_event_log_lines_dropped_total{%(f)s}[$__rate_interval]))'), '{{instance}} event log lines dropped (reader too slow)'),
        p.target(q('sum by (instance) (rate(portlens_owner_map_drops_total{%(f)s}[$__rate_interval]))'), '{{instance}} owners not recorded'),
      ],
      unit='ops',
      calcs=['max'],
    ),
    p.timeseries(
      'Failure diagnoses by outcome',
      fold(|||
        What became of the failed calls the agent explains: judged against the kernel's sockets,
        coalesced (identical failures within a second, nothing on their port or destination
        changed, given the judged one's diagnosis) or shed (the diagnosis queue was full: counted
        under cause not_judged, never judged). Coalesced high and judged low is a retry loop or a
        flood being absorbed; shed above zero means failures went unexplained.
      |||),
      p.pos(0, 147, 8, 8),
      [
        p.target(q('sum by (instance, outcome) (rate(portlens_diagnoses_total{%(f)s}[$__rate_interval]))'), '{{instance}} {{outcome}}'),
      ],
      unit='ops',
      calcs=['max'],
    ),
    p.timeseries(
      'Failures waiting for a diagnosis',
      fold(|||
        Failed calls queued for their diagnosis (portlens_diagnosis_queue_length). Each diagnosis
        turn has a time budget; a queue that stays up means failures arrive faster than they
        can be judged, and beyond 16,384 they are shed.
      |||),
      p.pos(8, 147, 8, 8),
      [
        p.target(q('max by (instance) (portlens_diagnosis_queue_length{%(f)s})'), '{{instance}}'),
      ],
      unit='short',
      calcs=['max'],
    ),
    p.timeseries(
      'Namespaces folded into netns="other"',
      fold(|||
        Network namespaces beyond the agent's --web.max-namespaces budget: the ones with the most
        sockets keep their own series, these are summed under netns="other" so that no local
        user can multiply the series by creating namespaces. Raise the budget if a namespace you
        need to see is folded.
      |||),
      p.pos(16, 147, 8, 8),
      [
        p.target(q('max by (instance) (portlens_network_namespaces_folded{%(f)s})'), '{{instance}}'),
      ],
      unit='short',
      calcs=['max'],
    ),
    p.timeseries(
      'TIME_WAITs the kernel refused',
      fold(|||
        Closes that would have left a TIME_WAIT but did not because the namespace already held
        net.ipv4.tcp_max_tw_buckets of them (TcpExtTCPTimeWaitOverflow). The connection is gone
        at once, without the protection TIME_WAIT gives against late segments; the TIME_WAIT
        gauges leave these out, as the kernel does. Above zero: the limit is reached.
      |||),
      p.pos(0, 155, 24, 8),
      [
        p.target(q('sum by (instance) (rate(portlens_time_wait_refused_total{%(f)s}[$__rate_interval]))'), '{{instance}}'),
      ],
      unit='ops',
      calcs=['max'],
    ),
    p.timeseries(
      'Agent memory',
      fold(|||
        Resident memory of each agent (process_resident_memory_bytes). It grows with the
        sockets tracked (see portlens_tracked_sockets) and falls back after a burst; one that
        only climbs while the socket counts stay flat is worth a bug report.
      |||),
      p.pos(0, 163, 5, 8),
      [
        p.target(q('max by (instance) (process_resident_memory_bytes{%(f)s})'), '{{instance}}'),
      ],
      unit='bytes',
      calcs=['lastNotNull', 'max'],
    ),
    p.timeseries(
      'Agent CPU',
      fold(|||
        CPU each agent's process uses, in cores (rate of process_cpu_seconds_total): its share of
        the tracing cost, the other share being the BPF programs' time beside it. It follows the
        connection churn on the host.
      |||),
      p.pos(5, 163, 5, 8),
      [
        p.target(q('sum by (instance) (rate(process_cpu_seconds_total{%(f)s}[$__rate_interval]))'), '{{instance}}'),
      ],
      unit='short',
      axis='cores',
    ),
    p.timeseries(
      'BPF program time',
      fold(|||
        CPU the kernel spends in the agent's BPF programs, in cores, by program (rate of
        portlens_bpf_program_run_seconds_total). Counted only while the kernel's BPF statistics
        are on (portlens_bpf_stats_enabled; the agent turns them on unless --no-bpf-stats).
      |||),
      p.pos(10, 163, 5, 8),
      [
        p.target(q('sum by (program) (rate(portlens_bpf_program_run_seconds_total{%(f)s}[$__rate_interval]))'), '{{program}}'),
      ],
      unit='short',
      axis='cores',
    ),
    p.timeseries(
      'BPF time per run',
      fold(|||
        Average time of one run of each of the agent's BPF programs, in nanoseconds (run time
        over run count, portlens_bpf_program_run_count_total). A syscall program runs once per
        call, the state program once per TCP state change.
      |||),
      p.pos(15, 163, 5, 8),
      [
        p.target(q('sum by (program) (rate(portlens_bpf_program_run_seconds_total{%(f)s}[$__rate_interval])) * 1e9 / sum by (program) (rate(portlens_bpf_program_run_count_total{%(f)s}[$__rate_interval]))'), '{{program}}'),
      ],
      unit='ns',
    ),
    p.stat(
      'BPF statistics off',
      fold(|||
        Agents whose BPF program run time is not counted (portlens_bpf_stats_enabled is 0: run
        with --no-bpf-stats, or BPF_ENABLE_STATS was refused). Their BPF time panels read 0.
      |||),
      p.pos(20, 163, 4, 8),
      [
        p.target(q('count(portlens_bpf_stats_enabled{%(f)s} == 0) or vector(0)'), 'agents'),
      ],
      graphMode='none',
    ),
  ],

  grafanaDashboards+:: {
    [c.dashboard.file]: {
      title: c.dashboard.title,
      uid: c.dashboard.uid,
      description: 'Ephemeral port exhaustion, TIME_WAIT, bind/listen/connect failures with their diagnosed causes, TCP state transitions and the health of the portlens agents.',
      tags: c.dashboard.tags,
      schemaVersion: 39,
      version: 1,
      editable: true,
      graphTooltip: 1,
      refresh: c.dashboard.refresh,
      time: { from: 'now-1h', to: 'now' },
      timepicker: {},
      timezone: '',
      fiscalYearStartMonth: 0,
      liveNow: false,
      weekStart: '',
      id: null,
      links: [],
      annotations: {
        list: [
          {
            builtIn: 1,
            datasource: { type: 'grafana', uid: '-- Grafana --' },
            enable: true,
            hide: true,
            iconColor: 'rgba(0, 211, 255, 1)',
            name: 'Annotations & Alerts',
            type: 'dashboard',
          },
        ],
      },
      templating: {
        list: [
          {
            name: 'datasource',
            label: 'Data source',
            type: 'datasource',
            query: 'prometheus',
            current: {},
            options: [],
            refresh: 1,
            regex: '',
            hide: 0,
            includeAll: false,
            multi: false,
          },
          queryVariable('cluster', 'Cluster',
                        'label_values(portlens_build_info, %s)' % c.clusterLabel,
                        hide=if c.showMultiCluster then 0 else 2),
          queryVariable('job', 'Job',
                        'label_values(portlens_build_info{%s=~"$cluster"}, job)' % c.clusterLabel),
          queryVariable('instance', 'Instance',
                        'label_values(portlens_build_info{%s=~"$cluster", job=~"$job"}, instance)'
                        % c.clusterLabel),
        ],
      },
      panels: p.withIds(panels),
    },
  },
}
