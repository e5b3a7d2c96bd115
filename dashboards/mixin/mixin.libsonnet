// The portlens monitoring mixin: Prometheus alert rules (prometheusAlerts) and a Grafana
// dashboard (grafanaDashboards), both from the settings in config.libsonnet. The usual mixin
// layout, so the usual tools (mixtool, kube-prometheus's addMixin, grizzly) take it as it is.
(import 'config.libsonnet') +
(import 'alerts.libsonnet') +
(import 'dashboards.libsonnet')
