# Grafana's workspace, once per environment, in the home region: an Amazon Managed Grafana
# workspace allowed to query every region's Prometheus workspace, and a token for Terraform.
# What goes inside Grafana (data sources, dashboards) is the dashboards module, applied from
# a root of its own (envs/<env>/dashboards): the grafana provider cannot be configured from a
# workspace created in the same plan, because its URL is unknown until the workspace exists.

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
