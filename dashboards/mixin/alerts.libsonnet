// Prometheus alert rules for `portlens agent`, rendered to dashboards/alerts/portlens.rules.yml
// and into deploy/kubernetes/base/prometheusrule.yaml by render.sh.
//
// Conventions (docs/runbook.md explains them for the people who receive these alerts):
// - Every rule selects $._config.selector (job="portlens" unless overridden): scrape the agents
//   under a job that matches it. A job that does not match sees no alerts at all, and
//   PortlensAgentAbsent says so.
// - Every aggregation and vector match keeps $._config.clusterLabel (`sum by (cluster, job,
//   instance, ...)`, `on (cluster, job, instance)`), so that one Prometheus, Thanos or Mimir
//   holding several clusters raises one alert per cluster. Without the label the matchers
//   still work: an absent label is the empty value on both sides.
// - severity="critical" pages: a host is failing, or is about to fail, to open connections.
//   severity="warning" opens a ticket: a service keeps failing to bind, or portlens's own
//   numbers are incomplete. There is no "info": an alert nobody acts on is noise.
// - PortlensEphemeralPortUtilizationHigh exists at both severities under one name, so that one
//   Alertmanager inhibit rule (critical over warning, equal on alertname and the destination's
//   labels) drops the warning while the critical fires; docs/runbook.md has the rule.
// - Annotation `runbook_url` is $._config.runbookURLPattern with the alert's name in lower case:
//   the anchor of the alert's section in docs/runbook.md.
// - No recording rules: every expression below reads directly from the agent's series.
local fold(text) =
  // A text block as one line, the way a YAML folded scalar (>-) reads: lines joined by spaces.
  std.join(' ', std.filter(function(line) line != '', std.split(text, '\n')));

{
  local c = $._config,
  local v = {
    sel: c.selector,
    cluster: c.clusterLabel,
  },
  local runbook(name) = { runbook_url: c.runbookURLPattern % std.asciiLower(name) },

  local utilizationHigh(severity, threshold, forDuration, forWords) = {
    alert: 'PortlensEphemeralPortUtilizationHigh',
    expr: |||
      portlens_ephemeral_port_utilization_ratio{%(sel)s} > %(threshold)g
      or on (%(cluster)s, job, instance, netns)
      portlens_ephemeral_port_utilization_max_ratio{%(sel)s} > %(threshold)g
    ||| % (v { threshold: threshold }),
    'for': forDuration,
    labels: { severity: severity },
    annotations: {
      summary: fold(|||
        Ephemeral ports toward {{ if $labels.remote_addr }}{{ $labels.remote_addr }}
        port {{ $labels.remote_port }}{{ else }}one destination{{ end }} on
        {{ $labels.instance }} (netns {{ $labels.netns }}) are {{ $value | humanizePercentage }} taken
      |||),
      description: fold(|||
        For %(for)s, more than %(percent)s%% of the ephemeral ports that connect() can use
        toward {{ if $labels.remote_addr }}{{ $labels.remote_addr }} port
        {{ $labels.remote_port }}{{ else }}the busiest destination{{ end }} from network
        namespace {{ $labels.netns }} on {{ $labels.instance }} have been taken: held by
        sockets to that destination, TIME_WAIT included, less the TIME_WAIT sockets that
        tcp_tw_reuse lets connect() take over. Now {{ $value | humanizePercentage }}. At
        100%%, every new connect() toward it fails with EADDRNOTAVAIL; other destinations are
        not affected.{{ if not $labels.remote_addr }} No per-destination series
        (portlens_ephemeral_port_utilization_ratio) is above the threshold, only this
        namespace's maximum: that destination's series did not reach Prometheus (dropped by
        metric relabelling, for example), so find it on the host.{{ end }}
      ||| % { 'for': forWords, percent: std.toString(std.floor(threshold * 100 + 0.5)) }),
    } + runbook('PortlensEphemeralPortUtilizationHigh'),
  },

  prometheusAlerts+:: {
    groups+: [
      {
        name: 'portlens.ephemeral',
        rules: [
          // Per destination (netns, remote_addr, remote_port), from the top-k series. The agent
          // ranks destinations by utilization before the cut, so the busiest one always has its
          // series; with more than top-k destinations above the threshold, the rest do not fire
          // on their own (the runbook says how to list them). A namespace whose highest
          // utilization (portlens_ephemeral_port_utilization_max_ratio, never cut) is above the
          // threshold while none of its per-destination series is also fires, once, with netns
          // only: the per-destination series were lost on the way (metric relabelling that
          // drops the high-cardinality series, for example). `or on (cluster, job, instance,
          // netns)` keeps that fallback out whenever a destination of the namespace fires, so
          // one destination never raises two alerts of one severity.
          utilizationHigh('warning', c.ephemeralUtilizationWarning, '5m', '5 minutes'),
          // Above 95%, the last ports go within seconds of a burst. A short `for` still filters
          // a single scrape: 2m spans two TIME_WAIT lifetimes (60 s each), so the value cannot
          // be one burst of connections draining out of TIME_WAIT; it means they keep coming at
          // that rate. Waiting longer only lets PortlensEphemeralPortsExhausted page first, on
          // real failures.
          utilizationHigh('critical', c.ephemeralUtilizationCritical, '2m', '2 minutes'),

          // Any connect() refused for want of a port pages at once: the failures are already
          // happening. The counter's series only appears with its first failure, and increase()
          // needs two samples, so a series that is new since 5 minutes ago counts too (its value
          // is its failures so far), provided the target was scraped successfully 5 minutes
          // ago. That condition keeps old failures from looking new after a failed scrape or a
          // restart of Prometheus.
          {
            alert: 'PortlensEphemeralPortsExhausted',
            expr: |||
              sum by (%(cluster)s, job, instance, proto, errno, comm) (
                  increase(portlens_connect_failures_total{%(sel)s,cause="ephemeral_exhausted"}[5m]) > 0
                or
                  (
                    portlens_connect_failures_total{%(sel)s,cause="ephemeral_exhausted"}
                    unless
                    portlens_connect_failures_total{%(sel)s,cause="ephemeral_exhausted"} offset 5m
                  )
                  and on (%(cluster)s, job, instance) (up{%(sel)s} offset 5m == 1)
              )
            ||| % v,
            labels: { severity: 'critical' },
            annotations: {
              summary: fold(|||
                {{ $labels.comm }} on {{ $labels.instance }} is failing to connect: no free
                ephemeral port ({{ $labels.proto }} {{ $labels.errno }}, {{ $value | printf "%.0f" }}
                in 5m)
              |||),
              description: fold(|||
                In the last 5 minutes, about {{ $value | printf "%.0f" }} {{ $labels.proto }}
                connect() calls by {{ $labels.comm }} on {{ $labels.instance }} failed with
                {{ $labels.errno }} because no ephemeral port was free toward their destination
                (cause ephemeral_exhausted). Exhaustion is per destination; the failure events
                name it (portlens trace --failures, or the agent's event log), and
                PortlensEphemeralPortUtilizationHigh shows it when it stays high between scrapes.
                comm="other" sums the processes beyond the agent's top-k.
              |||),
            } + runbook('PortlensEphemeralPortsExhausted'),
          },
        ],
      },
      {
        name: 'portlens.failures',
        rules: [
          // Every cause, ephemeral_exhausted included: bind(0) and listen() on an unbound socket
          // fail with EADDRINUSE when no port in the range is free of owners, and that is both a
          // bind failure and a namespace-wide exhaustion, so the description says so. More than
          // 2 failures in 5 minutes, kept up for 10 minutes: a service retrying about once a
          // minute fires; one failed restart or a burst during a deploy does not.
          {
            alert: 'PortlensBindFailuresSustained',
            expr: |||
              sum by (%(cluster)s, job, instance, proto, syscall, cause, comm) (
                increase(portlens_bind_failures_total{%(sel)s}[5m])
              ) > 2
            ||| % v,
            'for': '10m',
            labels: { severity: 'warning' },
            annotations: {
              summary: fold(|||
                {{ $labels.comm }} on {{ $labels.instance }} keeps failing to {{ $labels.syscall }}
                ({{ $labels.proto }}, cause {{ $labels.cause }}, {{ $value | printf "%.0f" }} in 5m)
              |||),
              description: fold(|||
                For 10 minutes, {{ $labels.comm }} on {{ $labels.instance }} has had more than 2
                failed {{ $labels.proto }} {{ $labels.syscall }}() calls every 5 minutes (now about
                {{ $value | printf "%.0f" }}), diagnosed as {{ $labels.cause }}: `portlens explain
                {{ $labels.cause }}` gives the kernel rule and the fixes.{{ if eq $labels.cause "ephemeral_exhausted" }}
                This cause on bind() or listen() means that no port in the ephemeral range is free
                of owners (bind(addr, 0), or listen() on an unbound socket): the whole range of
                that network namespace is taken, which is more urgent than a conflict on one
                port.{{ end }} comm="other" sums the processes beyond the agent's top-k.
              |||),
            } + runbook('PortlensBindFailuresSustained'),
          },
        ],
      },
      {
        name: 'portlens.listen',
        rules: [
          // A listener whose accept queue stays near its limit: the application does not
          // accept() as fast as handshakes complete. At the limit the kernel drops the next
          // handshakes (PortlensListenOverflows). A limit of 0 (listen(0)) never divides.
          {
            alert: 'PortlensListenQueueNearlyFull',
            expr: |||
              (
                portlens_listen_queue_length{%(sel)s}
                / (portlens_listen_queue_limit{%(sel)s} > 0)
              ) > %(threshold)g
            ||| % (v { threshold: c.listenQueueFullRatio }),
            'for': '1m',
            labels: { severity: 'warning' },
            annotations: {
              summary: fold(|||
                The accept queue of {{ $labels.local_addr }}:{{ $labels.local_port }} on
                {{ $labels.instance }} (netns {{ $labels.netns }}) is
                {{ $value | humanizePercentage }} full
              |||),
              description: fold(|||
                For a minute, the listener on {{ $labels.local_addr }}:{{ $labels.local_port }}
                in network namespace {{ $labels.netns }} on {{ $labels.instance }} has held more
                than %(percent)s%% of its accept queue's limit in connections whose handshake is
                done and that the application has not accept()ed (now
                {{ $value | humanizePercentage }}). When the queue is full the kernel drops new
                handshakes (TcpExtListenOverflows) and clients see connect timeouts and
                retransmitted SYNs. `portlens why {{ $labels.local_port }}` names the process and
                the backlog against net.core.somaxconn.
              ||| % { percent: std.toString(std.floor(c.listenQueueFullRatio * 100 + 0.5)) }),
            } + runbook('PortlensListenQueueNearlyFull'),
          },
          // Handshakes dropped for a full accept queue, counted by the kernel per namespace.
          {
            alert: 'PortlensListenOverflows',
            expr: |||
              sum by (%(cluster)s, job, instance, netns) (
                increase(portlens_listen_overflows_total{%(sel)s}[5m])
              ) > 0
            ||| % v,
            'for': '1m',
            labels: { severity: 'warning' },
            annotations: {
              summary: fold(|||
                Listeners on {{ $labels.instance }} (netns {{ $labels.netns }}) dropped
                {{ $value | printf "%.0f" }} handshakes in 5m: an accept queue was full
              |||),
              description: fold(|||
                The kernel of {{ $labels.instance }} dropped about {{ $value | printf "%.0f" }}
                completed handshakes in network namespace {{ $labels.netns }} in the last 5
                minutes because a listener's accept queue was full (TcpExtListenOverflows).
                Clients retry their SYN after 1, 3, 7 s...: connections are slow or time out.
                portlens_listen_queue_length against portlens_listen_queue_limit shows which
                listener is full.
              |||),
            } + runbook('PortlensListenOverflows'),
          },
        ],
      },
      {
        name: 'portlens.close_wait',
        rules: [
          // CLOSE_WAIT only leaves when the owner close()s: a count that keeps rising for half an
          // hour is a process that does not close connections its peers ended (a leak of fds,
          // buffers and, for outgoing connections, ephemeral ports).
          {
            alert: 'PortlensCloseWaitGrowing',
            expr: |||
              (portlens_close_wait_sockets{%(sel)s} >= %(minimum)d)
              and
              (deriv(portlens_close_wait_sockets{%(sel)s}[30m]) > 0)
            ||| % (v { minimum: c.closeWaitMinimum }),
            'for': '30m',
            labels: { severity: 'warning' },
            annotations: {
              summary: fold(|||
                {{ $labels.comm }} on {{ $labels.instance }} keeps {{ $value | printf "%.0f" }}
                connections in CLOSE_WAIT on port {{ $labels.local_port }}, and more each minute
              |||),
              description: fold(|||
                For 30 minutes the number of TCP sockets in CLOSE_WAIT held by
                {{ $labels.comm }} on local port {{ $labels.local_port }} (network namespace
                {{ $labels.netns }}, {{ $labels.instance }}) has been rising, now
                {{ $value | printf "%.0f" }}: their peers closed the connections and the process
                never close()d its side. Each holds a file descriptor and its buffers until the
                process exits; a leak ends in EMFILE. portlens_close_wait_oldest_seconds says how
                long the oldest has waited.
              |||),
            } + runbook('PortlensCloseWaitGrowing'),
          },
        ],
      },
      {
        name: 'portlens.agent',
        rules: [
          // Lost events are never retried: until the next reconcile (--reconcile-interval, 30 s)
          // the socket table, the ephemeral accounting and the failure counters may be wrong.
          // increase() treats an agent restart (the counter back to 0) as a reset, not as a
          // loss. No aggregation: every label of the series, cluster included, stays.
          {
            alert: 'PortlensEventsLost',
            expr: |||
              increase(portlens_events_lost_total{%(sel)s}[10m]) > 0
            ||| % v,
            labels: { severity: 'warning' },
            annotations: {
              summary: fold(|||
                portlens on {{ $labels.instance }} lost {{ $value | printf "%.0f" }} kernel events
                in 10m
              |||),
              description: fold(|||
                The agent on {{ $labels.instance }} lost about {{ $value | printf "%.0f" }} kernel
                events in the last 10 minutes (its ring buffer or its in-flight call table was
                full). Failures in that time may be missing from portlens_bind_failures_total and
                portlens_connect_failures_total, and socket counts may be off until the next
                reconcile corrects them.
              |||),
            } + runbook('PortlensEventsLost'),
          },

          {
            alert: 'PortlensTrackerTableFull',
            expr: |||
              increase(portlens_evictions_total{%(sel)s}[10m]) > 0
            ||| % v,
            labels: { severity: 'warning' },
            annotations: {
              summary: fold(|||
                portlens on {{ $labels.instance }} could not track {{ $value | printf "%.0f" }}
                sockets in 10m: its {{ $labels.table }} table is full
              |||),
              description: fold(|||
                The agent on {{ $labels.instance }} left about {{ $value | printf "%.0f" }} sockets
                untracked in the last 10 minutes because its {{ $labels.table }} table was full.
                Its socket and TIME_WAIT counts, the ephemeral port utilization and the diagnoses
                that depend on those sockets undercount until the table has room again.
              |||),
            } + runbook('PortlensTrackerTableFull'),
          },

          // Some corrections are normal (a socket closed without an event, a TIME_WAIT killed
          // early by an RST). Drift is when they are frequent and a large share of what the
          // events say: more than one a minute and more than 1 for every 20 events, for 30
          // minutes.
          {
            alert: 'PortlensTrackerDrift',
            expr: |||
              sum by (%(cluster)s, job, instance) (rate(portlens_reconcile_corrections_total{%(sel)s}[15m])) * 60 > 1
              and on (%(cluster)s, job, instance)
              (
                  sum by (%(cluster)s, job, instance) (rate(portlens_reconcile_corrections_total{%(sel)s}[15m]))
                >
                  0.05 * sum by (%(cluster)s, job, instance) (rate(portlens_events_total{%(sel)s}[15m]))
              )
            ||| % v,
            'for': '30m',
            labels: { severity: 'warning' },
            annotations: {
              summary: fold(|||
                portlens on {{ $labels.instance }} corrects its socket table
                {{ $value | printf "%.1f" }} times a minute
              |||),
              description: fold(|||
                For 30 minutes, the agent on {{ $labels.instance }} has found its socket table
                wrong at every reconcile: {{ $value | printf "%.1f" }} corrections a minute, more
                than 1 for every 20 kernel events it processed. Between reconciles its counts and
                diagnoses follow a table that drifts from the kernel's. The kind label of
                portlens_reconcile_corrections_total says what is being corrected.
              |||),
            } + runbook('PortlensTrackerDrift'),
          },

          {
            alert: 'PortlensAgentDown',
            expr: |||
              up{%(sel)s} == 0
            ||| % v,
            'for': '5m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'portlens on {{ $labels.instance }} has not been scraped for 5 minutes',
              description: fold(|||
                Prometheus has failed to scrape the portlens agent on {{ $labels.instance }}
                (job {{ $labels.job }}) for 5 minutes. While it is down, no portlens alert can
                fire for that host, PortlensEphemeralPortsExhausted included.
              |||),
            } + runbook('PortlensAgentDown'),
          },

          // up{...} == 0 cannot fire when there is no target at all: service discovery lost
          // every agent, or the scrape job is missing or renamed. absent() has no series to
          // take the cluster label from: where one Prometheus per cluster evaluates the rules,
          // its external labels name the cluster; a global evaluator (Thanos ruler, Mimir)
          // fires once for every cluster at a time.
          {
            alert: 'PortlensAgentAbsent',
            expr: |||
              absent(up{%(sel)s})
            ||| % v,
            'for': '10m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'No portlens agent has been a scrape target for 10 minutes',
              description: fold(|||
                Prometheus has had no target matching {%(sel)s} for 10 minutes, so no portlens
                alert can fire anywhere. The scrape job is missing, renamed (these rules select
                {%(sel)s}, the selector of the portlens mixin), or its service discovery finds
                no agent.
              ||| % v),
            } + runbook('PortlensAgentAbsent'),
          },
        ],
      },
    ],
  },
}
