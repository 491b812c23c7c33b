# Grafana, once per environment: an Amazon Managed Grafana workspace reading every region's
# Prometheus workspace, and the dashboards of dashboards/grafana. Its region is the
# environment's ops_region, which a failover does not move.
#
# The grafana provider is configured by the environment root with this module's url and
# token outputs. On an environment's very first plan they are unknown (the workspace does not
# exist yet): not tried against a real account, see "Left to do" in infra/terraform/README.md.

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["grafana.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "grafana" {
  name_prefix        = "${var.name}-grafana-"
  assume_role_policy = data.aws_iam_policy_document.assume.json

  tags = var.tags
}

data "aws_iam_policy_document" "query" {
  statement {
    actions   = ["aps:QueryMetrics", "aps:GetSeries", "aps:GetLabels", "aps:GetMetricMetadata"]
    resources = [for p in var.prometheus : p.workspace_arn]
  }
}

resource "aws_iam_role_policy" "query" {
  role   = aws_iam_role.grafana.id
  policy = data.aws_iam_policy_document.query.json
}

resource "aws_grafana_workspace" "this" {
  name                     = var.name
  account_access_type      = "CURRENT_ACCOUNT"
  authentication_providers = ["AWS_SSO"]
  permission_type          = "CUSTOMER_MANAGED"
  role_arn                 = aws_iam_role.grafana.arn
  data_sources             = ["PROMETHEUS"]

  tags = var.tags
}

# Terraform's own identity in Grafana: it writes data sources and dashboards, nothing else.
resource "aws_grafana_workspace_service_account" "terraform" {
  name         = "terraform"
  grafana_role = "EDITOR"
  workspace_id = aws_grafana_workspace.this.id
}

resource "aws_grafana_workspace_service_account_token" "terraform" {
  name               = "terraform"
  service_account_id = aws_grafana_workspace_service_account.terraform.service_account_id
  seconds_to_live    = 2592000
  workspace_id       = aws_grafana_workspace.this.id
}

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
