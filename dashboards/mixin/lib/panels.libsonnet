// Grafana panel builders for the portlens dashboards: the classic JSON model of schemaVersion 39
// (Grafana 10 and 11), with the defaults every portlens panel shares. Each builder takes what
// differs from panel to panel; `+ { ... }` on the result changes anything else.
{
  local datasource = { type: 'prometheus', uid: '${datasource}' },
  local single(color) = { mode: 'absolute', steps: [{ color: color, value: null }] },

  // Green below 80 %, orange from 80 %, red from 95 %: the ephemeral port alerts' thresholds.
  utilizationThresholds(warning, critical):: {
    mode: 'absolute',
    steps: [
      { color: 'green', value: null },
      { color: 'orange', value: warning },
      { color: 'red', value: critical },
    ],
  },
  greenThresholds:: single('green'),

  // One query of a graph or a stat: a range query with its legend.
  target(expr, legend):: {
    datasource: datasource,
    editorMode: 'code',
    expr: expr,
    legendFormat: legend,
    range: true,
    instant: false,
  },
  // One query of a table: an instant query, one row per series.
  tableTarget(expr):: {
    datasource: datasource,
    editorMode: 'code',
    expr: expr,
    legendFormat: '',
    range: false,
    instant: true,
    format: 'table',
  },

  local withRefIds(targets) = [
    targets[i] { refId: std.char(std.codepoint('A') + i) }
    for i in std.range(0, std.length(targets) - 1)
  ],
  local base(type, title, description, pos, targets) = {
    type: type,
    title: title,
    description: description,
    datasource: datasource,
    gridPos: pos,
    targets: withRefIds(targets),
  },

  // gridPos: x and w in 24ths of the width, y and h in rows of 30 px.
  pos(x, y, w, h):: { x: x, y: y, w: w, h: h },

  row(title, y):: {
    type: 'row',
    title: title,
    collapsed: false,
    gridPos: { x: 0, y: y, w: 24, h: 1 },
    panels: [],
  },

  // A line graph. axis: the y axis label; calcs: the legend table's columns.
  timeseries(title, description, pos, targets, unit='short', axis='', calcs=['mean', 'max'],
             thresholds=self.greenThresholds, thresholdsStyle='off', max=null, overrides=[])::
    base('timeseries', title, description, pos, targets) {
      fieldConfig: {
        defaults: {
          unit: unit,
          min: 0,
          color: { mode: 'palette-classic' },
          custom: {
            drawStyle: 'line',
            lineWidth: 1,
            fillOpacity: 10,
            gradientMode: 'none',
            showPoints: 'never',
            spanNulls: false,
            axisLabel: axis,
            axisPlacement: 'auto',
            stacking: { mode: 'none', group: 'A' },
            thresholdsStyle: { mode: thresholdsStyle },
          },
          thresholds: thresholds,
        } + (if max == null then {} else { max: max }),
        overrides: overrides,
      },
      options: {
        legend: { showLegend: true, displayMode: 'table', placement: 'bottom', calcs: calcs },
        tooltip: { mode: 'multi', sort: 'desc' },
      },
    },

  // A single number per series, its last value.
  stat(title, description, pos, targets, unit='short', thresholds=self.greenThresholds,
       colorMode='value', graphMode='area', overrides=[])::
    base('stat', title, description, pos, targets) {
      fieldConfig: {
        defaults: {
          unit: unit,
          color: { mode: 'thresholds' },
          thresholds: thresholds,
          mappings: [],
        },
        overrides: overrides,
      },
      options: {
        reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
        colorMode: colorMode,
        graphMode: graphMode,
        textMode: 'auto',
        justifyMode: 'auto',
        orientation: 'auto',
      },
    },

  // A table of instant queries; transformations shape the columns.
  table(title, description, pos, targets, transformations, sortBy, overrides=[])::
    base('table', title, description, pos, targets) {
      transformations: transformations,
      fieldConfig: {
        defaults: {
          unit: 'short',
          color: { mode: 'thresholds' },
          thresholds: single('green'),
          custom: { align: 'auto', cellOptions: { type: 'auto' } },
        },
        overrides: overrides,
      },
      options: {
        showHeader: true,
        cellHeight: 'sm',
        footer: { show: false, reducer: ['sum'], fields: '' },
        sortBy: sortBy,
      },
    },

  // Numbers every panel of a list by its position (rows included), from 1.
  withIds(panels):: [panels[i] { id: i + 1 } for i in std.range(0, std.length(panels) - 1)],
}
