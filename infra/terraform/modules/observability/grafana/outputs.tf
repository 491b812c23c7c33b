output "url" {
  description = "The Grafana workspace's URL."
  value       = "https://${aws_grafana_workspace.this.endpoint}"
}

output "token" {
  description = "Terraform's service account token (configures the grafana provider)."
  value       = aws_grafana_workspace_service_account_token.terraform.key
  sensitive   = true
}

output "dashboards" {
  description = "Dashboard uid by file."
  value       = { for f, d in grafana_dashboard.this : f => d.uid }
}
