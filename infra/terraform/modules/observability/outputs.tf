output "workspace_id" {
  description = "The region's Prometheus workspace."
  value       = aws_prometheus_workspace.this.id
}

output "prometheus_endpoint" {
  description = "Query and remote-write base URL of the workspace."
  value       = aws_prometheus_workspace.this.prometheus_endpoint
}

output "workspace_arn" {
  description = "The workspace (Grafana's read permission)."
  value       = aws_prometheus_workspace.this.arn
}

output "rule_namespaces" {
  description = "The rule files loaded, by namespace."
  value       = sort([for n in aws_prometheus_rule_group_namespace.this : n.name])
}

output "alerts_topic_arn" {
  description = "SNS topic the alert manager publishes to (subscribe the pager to it)."
  value       = aws_sns_topic.alerts.arn
}
