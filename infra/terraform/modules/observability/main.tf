# One region's metrics: an Amazon Managed Prometheus workspace (the region's collectors
# remote-write into it), the rule groups of dashboards/prometheus evaluated by it, and its
# alert manager publishing to an SNS topic that on-call subscribes to. Grafana, one per
# environment, is the grafana/ submodule.

data "aws_region" "current" {}

locals {
  rule_files = fileset(var.rules_dir, "*.rules.yml")
}

resource "aws_cloudwatch_log_group" "amp" {
  name              = "/dotshop/amp/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn

  tags = var.tags
}

resource "aws_prometheus_workspace" "this" {
  alias       = var.name
  kms_key_arn = var.kms_key_arn

  logging_configuration {
    log_group_arn = "${aws_cloudwatch_log_group.amp.arn}:*"
  }

  tags = var.tags
}

# Each rules file as it is in the repository: what promtool tests is what runs.
resource "aws_prometheus_rule_group_namespace" "this" {
  for_each = local.rule_files

  name         = trimsuffix(each.key, ".rules.yml")
  workspace_id = aws_prometheus_workspace.this.id
  data         = file("${var.rules_dir}/${each.key}")

  tags = var.tags
}

resource "aws_sns_topic" "alerts" {
  name              = "${var.name}-alerts"
  kms_master_key_id = var.kms_key_arn

  tags = var.tags
}

data "aws_iam_policy_document" "alerts" {
  statement {
    actions   = ["sns:Publish", "sns:GetTopicAttributes"]
    resources = [aws_sns_topic.alerts.arn]
    principals {
      type        = "Service"
      identifiers = ["aps.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_prometheus_workspace.this.arn]
    }
  }
}

resource "aws_sns_topic_policy" "alerts" {
  arn    = aws_sns_topic.alerts.arn
  policy = data.aws_iam_policy_document.alerts.json
}

# Alerts are grouped like the local Alertmanager (tests/checks/test_alertmanager.py): by
# alert name and region, so one broken invariant pages once.
resource "aws_prometheus_alert_manager_definition" "this" {
  workspace_id = aws_prometheus_workspace.this.id
  definition = yamlencode({
    alertmanager_config = yamlencode({
      route = {
        receiver        = "sns"
        group_by        = ["alertname", "region"]
        group_wait      = "30s"
        group_interval  = "5m"
        repeat_interval = "1h"
      }
      receivers = [{
        name = "sns"
        sns_configs = [{
          topic_arn = aws_sns_topic.alerts.arn
          sigv4     = { region = data.aws_region.current.name }
        }]
      }]
    })
  })
}
