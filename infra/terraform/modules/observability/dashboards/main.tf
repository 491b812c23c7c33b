# Inside Grafana: one Prometheus data source per region (SigV4 to Amazon Managed Prometheus)
# and every dashboard of dashboards/grafana, read in place, in a "dotshop" folder. Applied from
# envs/<env>/dashboards with the grafana provider configured from the environment root's
# outputs (its workspace URL and Terraform's token).

resource "grafana_data_source" "prometheus" {
  for_each = var.prometheus

  type = "prometheus"
  name = "Prometheus ${each.key}"
  url  = each.value.endpoint

  json_data_encoded = jsonencode({
    httpMethod    = "POST"
    sigV4Auth     = true
    sigV4AuthType = "ec2_iam_role"
    sigV4Region   = each.value.aws_region
  })
}

resource "grafana_folder" "dotshop" {
  title = "dotshop"
}

resource "grafana_dashboard" "this" {
  for_each = fileset(var.dashboards_dir, "*.json")

  folder      = grafana_folder.dotshop.uid
  config_json = file("${var.dashboards_dir}/${each.key}")
  overwrite   = true
}
