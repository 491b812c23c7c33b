# prod's Grafana contents: data sources per region and the dashboards of dashboards/grafana.
# Applied by the pipeline right after the environment root (../), from its outputs.

module "dashboards" {
  source = "../../../modules/observability/dashboards"

  dashboards_dir = "${path.root}/../../../../../dashboards/grafana"
  prometheus     = var.prometheus
}
