// The portlens mixin's settings. Override any of them from your own jsonnet:
//
//   (import 'mixin.libsonnet') + { _config+:: { selector: 'job="node-agents"' } }
//
// and render with render.sh (or your own jsonnet call; see dashboards/README.md, "The mixin").
{
  _config+:: {
    // Selects the agents' series in every alert rule: the label matchers of the scrape job(s)
    // that scrape `portlens agent`. The default matches README.md's scrape config and the
    // ServiceMonitor of deploy/kubernetes (whose job label is the Service's name, portlens).
    selector: 'job="portlens"',

    // The label that tells clusters apart when one Prometheus (or Thanos, Mimir, ...) holds
    // several. Every alert keeps it through its aggregations, and the dashboard filters on it
    // with its `cluster` variable. A Prometheus without the label works too: the variable's
    // "All" matches series that lack it.
    clusterLabel: 'cluster',
    // Show the dashboard's cluster variable (false hides it, still set to All).
    showMultiCluster: true,

    // Every alert's runbook_url: this pattern with the alert's name in lower case, which is
    // the anchor of its section in docs/runbook.md. Point it at your own copy if you publish
    // one elsewhere.
    runbookURLPattern: 'https://github.com/portlens/portlens/blob/main/docs/runbook.md#%s',

    // Thresholds of PortlensEphemeralPortUtilizationHigh, as a share of the usable ports.
    ephemeralUtilizationWarning: 0.8,
    ephemeralUtilizationCritical: 0.95,
    // PortlensListenQueueNearlyFull: an accept queue above this share of its limit for 1m.
    listenQueueFullRatio: 0.8,
    // PortlensCloseWaitGrowing: at least this many CLOSE_WAIT sockets of one owner and port.
    closeWaitMinimum: 10,

    // The dashboard.
    dashboard: {
      uid: 'portlens-overview',
      title: 'portlens / Ports and TIME_WAIT',
      tags: ['portlens'],
      file: 'portlens-overview.json',
      refresh: '30s',
    },

    // The Kubernetes objects that deploy/kubernetes/base gets from this mixin.
    kubernetes: {
      namespace: 'portlens',
      labels: { 'app.kubernetes.io/name': 'portlens' },
      prometheusRuleName: 'portlens',
      dashboardConfigMapName: 'portlens-dashboards',
    },
  },
}
